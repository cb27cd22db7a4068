-- The helpers every merlin_tracking Redis script shares. A script is this prelude, then the
-- helpers at the top of its own file (above the first marker), then one entry point below a
-- `--@@ name` marker line (see scripts.py).
--
-- KEYS[1] is the tagged prefix P ("{prefix}") in every script, and every key a script touches
-- starts with it: a Redis Cluster client routes a script by its first key, and the hash tag
-- puts all keys of one prefix in that key's slot. ARGV holds only each script's own arguments.
--
-- Record hashes hold one JSON document per field. Scripts decode only fields that hold ids,
-- names and statuses (strings), which cjson round-trips exactly; numbers are never re-encoded.

local P = KEYS[1]

local function key(a, b, c, d, ...)
  -- Written out for the arities in use: table.concat of varargs costs ten times more.
  if d ~= nil then
    if select('#', ...) > 0 then return P .. ':' .. table.concat({a, b, c, d, ...}, ':') end
    return P .. ':' .. a .. ':' .. b .. ':' .. c .. ':' .. d
  end
  if c ~= nil then return P .. ':' .. a .. ':' .. b .. ':' .. c end
  if b ~= nil then return P .. ':' .. a .. ':' .. b end
  return P .. ':' .. a
end

-- First 12 bytes of SHA-1, as raw bytes: the field of a unique index (see keys.py).
local function digest(value)
  local hex = redis.sha1hex(value)
  local out = {}
  for i = 1, 24, 2 do
    out[#out + 1] = string.char(tonumber(string.sub(hex, i, i + 1), 16))
  end
  return table.concat(out)
end

-- Values longer than CHUNK bytes are split over the fields name, name+1, name+2, ... so that
-- record hashes keep Redis's compact listpack encoding (hash-max-listpack-value defaults to 64).
local CHUNK = 64

local function hget_full(hkey, field)
  local raw = redis.call('HGET', hkey, field)
  if not raw or #raw < CHUNK then return raw end
  local parts, i = {raw}, 1
  while true do
    local part = redis.call('HGET', hkey, field .. '+' .. i)
    if not part then break end
    parts[#parts + 1] = part
    i = i + 1
    if #part < CHUNK then break end
  end
  return table.concat(parts)
end

local function hdel_full(hkey, field)
  local i = 1
  while redis.call('HDEL', hkey, field .. '+' .. i) == 1 do i = i + 1 end
  return redis.call('HDEL', hkey, field)
end

local function hset_full(hkey, field, value)
  local i = 1
  while redis.call('HDEL', hkey, field .. '+' .. i) == 1 do i = i + 1 end
  if #value <= CHUNK then
    redis.call('HSET', hkey, field, value)
    return
  end
  local n, pos = 0, 1
  while pos <= #value do
    local name = field
    if n > 0 then name = field .. '+' .. n end
    redis.call('HSET', hkey, name, string.sub(value, pos, pos + CHUNK - 1))
    n, pos = n + 1, pos + CHUNK
  end
end

local function jget(hkey, field, default)
  local raw = hget_full(hkey, field)
  if not raw then return default end
  local value = cjson.decode(raw)
  if value == cjson.null then return default end
  return value
end

local function encode_list(items)
  if #items == 0 then return '[]' end
  return cjson.encode(items)
end

-- Add or remove one member of a JSON list field (run.workers, run.queues). Empty lists are
-- stored as an absent field, matching the records' storage form.
local function list_add(hkey, field, member)
  local items = jget(hkey, field, {})
  for _, item in ipairs(items) do
    if item == member then return 0 end
  end
  items[#items + 1] = member
  table.sort(items)
  hset_full(hkey, field, encode_list(items))
  return 1
end

local function list_remove(hkey, field, member)
  local items = jget(hkey, field, {})
  local kept = {}
  for _, item in ipairs(items) do
    if item ~= member then kept[#kept + 1] = item end
  end
  if #kept == #items then return 0 end
  if #kept == 0 then hdel_full(hkey, field) else hset_full(hkey, field, encode_list(kept)) end
  return 1
end

local function hset_pairs(hkey, pairs, first, fresh, last)
  -- pairs: flat array name, json, name, json...; an empty json text deletes the field.
  -- ``fresh``: the hash is new, so short values go out in one HSET with no stale chunks.
  -- ``last``: the index of the last item to read (default: the end of ``pairs``).
  local short = {}
  for i = first, last or #pairs, 2 do
    local name, value = pairs[i], pairs[i + 1]
    if value == '' then
      hdel_full(hkey, name)
    elseif fresh and #value <= CHUNK then
      short[#short + 1] = name
      short[#short + 1] = value
    else
      hset_full(hkey, name, value)
    end
  end
  if #short > 0 then redis.call('HSET', hkey, unpack(short)) end
end

-- Before any command: scripts write after TIME (tasks.lua) or SRANDMEMBER (delete_study), which
-- Redis 5 and 6 allow only with effects replication (7 always does it).
if redis.replicate_commands then pcall(redis.replicate_commands) end

-- Statuses a run can still leave: the runs that new tasks and workers join.
local ACTIVE_STATUS = {INITIALIZED = true, QUEUED = true, RUNNING = true, STALLED = true}

-- The Redis server's clock in microseconds (the unit of stored datetimes), read once per call.
local NOW
local function now_micros()
  if not NOW then
    local t = redis.call('TIME')
    NOW = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return NOW
end

-- Integers as Redis stores them (Lua's tostring would write large ones as 1.7e+15).
local function fmt(n)
  return string.format('%.0f', n)
end

-- A running physical worker that records ``stale_after`` (seconds) keeps a key that expires
-- after it; readers see STALLED once the key is gone, judged by the Redis server's clock. The
-- same deadline orders {P}:pw:alive_until, where catch_up finds the workers that went stale.
local function refresh_liveness(pw_id)
  local pkey = key('pw', pw_id)
  local stale_after = jget(pkey, 'stale_after', nil)
  if stale_after and jget(pkey, 'status', 'RUNNING') == 'RUNNING' then
    local ms = math.max(1, math.floor(stale_after * 1000))
    redis.call('SET', key('pw', pw_id, 'alive'), '1', 'PX', ms)
    redis.call('ZADD', key('pw', 'alive_until'), fmt(now_micros() + ms * 1000), pw_id)
  else
    redis.call('DEL', key('pw', pw_id, 'alive'))
    redis.call('ZREM', key('pw', 'alive_until'), pw_id)
  end
end

-- The keys of a run's task ledger (records, name dictionary, errors, waiting counts, kept
-- messages, the row index and its text ids): what retention expires and deletion removes.
local function ledger_keys(run_id)
  return {key('run', run_id, 'tasks'), key('run', run_id, 'dict'), key('run', run_id, 'errors'),
    key('run', run_id, 'waiting'), key('run', run_id, 'msgs'), key('run', run_id, 'rows'),
    key('run', run_id, 'xids')}
end

-- The field of a task in {P}:run:<n>:tasks: a canonical (lowercase) UUID as its 16 bytes, any
-- other id as itself, escaped with a leading NUL when it is 16 bytes long or starts with one
-- (keys.py: pack_task_id and unpack_task_id are the Python twins).
-- The hex pair -> byte table is built on first use: building it costs ~120 us of server time,
-- which every script call would pay if the prelude built it.
local HEX_BYTE = nil
local DASH = 45

local function hex_bytes()
  if not HEX_BYTE then
    HEX_BYTE = {}
    for i = 0, 255 do HEX_BYTE[string.format('%02x', i)] = string.char(i) end
  end
  return HEX_BYTE
end

local function pack_id(id)
  if #id == 36 and string.byte(id, 9) == DASH and string.byte(id, 14) == DASH
      and string.byte(id, 19) == DASH and string.byte(id, 24) == DASH then
    -- A pair that is no lowercase hex stays two characters: then it is no UUID.
    local packed = string.gsub(string.gsub(id, '-', '', 4), '..', hex_bytes())
    if #packed == 16 then return packed, true end
  end
  if #id == 16 or string.byte(id, 1) == 0 then return '\0' .. id, false end
  return id, false
end

-- Key part of the run sets that index task records by name, queue or worker ({P}:task:<kind>:
-- <value hash>): the first 24 hex digits of SHA-1(value).
local function value_hash(value)
  return string.sub(redis.sha1hex(value), 1, 24)
end

local TASK_LETTERS = {'q', 'c', 's', 'r', 'S', 'F', 'R', 'L'}

-- Take a run out of the run sets of the task index ({P}:task:s:<letter> and the name, queue
-- and worker sets its dictionary names), before its ledger goes.
local function unindex_run_tasks(run_id)
  for _, letter in ipairs(TASK_LETTERS) do redis.call('SREM', key('task', 's', letter), run_id) end
  local flat = redis.call('HGETALL', key('run', run_id, 'dict'))
  for i = 1, #flat, 2 do
    local kind = string.sub(flat[i], 1, 1)
    if kind == 'n' or kind == 'q' or kind == 'w' then
      redis.call('SREM', key('task', kind, value_hash(string.sub(flat[i], 2))), run_id)
    end
  end
end

local function delete_run(run_id)
  local rkey = key('run', run_id)
  if redis.call('EXISTS', rkey) == 0 then return 0 end
  local study_id = jget(rkey, 'study_id', nil)
  if study_id then redis.call('SREM', key('study', study_id, 'runs'), run_id) end
  for _, q in ipairs(jget(rkey, 'queues', {})) do redis.call('SREM', key('run', 'queue', q), run_id) end
  for _, w in ipairs(jget(rkey, 'workers', {})) do redis.call('SREM', key('lw', w, 'runs'), run_id) end
  redis.call('SREM', key('run', 'status', jget(rkey, 'status', 'INITIALIZED')), run_id)
  local wsd = digest(jget(rkey, 'workspace', ''))
  if redis.call('HGET', key('run', 'workspace'), wsd) == run_id then
    redis.call('HDEL', key('run', 'workspace'), wsd)
  end
  redis.call('LREM', key('run', 'recent'), 0, run_id)
  redis.call('SREM', key('run', 'settling'), run_id)
  redis.call('ZREM', key('run', 'settle'), run_id)
  unindex_run_tasks(run_id)
  redis.call('DEL', rkey, unpack(ledger_keys(run_id)))
  return 1
end
