-- Shared helpers for merlin_tracking's Redis scripts. Every script is this file's helpers plus
-- one entry point below a marker line (see scripts.py). Every key starts with the tagged
-- prefix P (ARGV[1]), so all keys of one prefix share one Redis Cluster hash slot.
--
-- Record hashes hold one JSON document per field. Scripts decode only fields that hold ids,
-- names and statuses (strings), which cjson round-trips exactly; numbers are never re-encoded.

local P = ARGV[1]

local function key(...)
  return P .. ':' .. table.concat({...}, ':')
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

local function hset_pairs(hkey, pairs, first, fresh)
  -- pairs: flat array name, json, name, json...; an empty json text deletes the field.
  -- ``fresh``: the hash is new, so short values go out in one HSET with no stale chunks.
  local short = {}
  for i = first, #pairs, 2 do
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

local function pairs_to_map(flat, first)
  local map = {}
  for i = first, #flat, 2 do map[flat[i]] = flat[i + 1] end
  return map
end

-- The Redis server's clock in microseconds (the unit of stored datetimes), read once per call.
-- Redis 5 and 6 need effects replication for a script that writes after TIME (7 always does it).
if redis.replicate_commands then pcall(redis.replicate_commands) end
local NOW
local function now_micros()
  if not NOW then
    local t = redis.call('TIME')
    NOW = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return NOW
end

-- A run whose tasks were received at a worker (untracked publisher) records ``settle_until``:
-- it may complete only once that has passed with no new receipt. Until then it waits in
-- {P}:run:settling, which the ``settle_runs`` script (worker heartbeats, the CLI) works off.
local function settled(rkey)
  local raw = redis.call('HGET', rkey, 'settle_until')
  return not raw or tonumber(raw) <= now_micros()
end

-- Status follows the counters: QUEUED on publish, RUNNING on start, FAILED on a failure,
-- COMPLETED when every counted task finished, none failed, no launch is still publishing and
-- the run has settled. FAILED and CANCELLED are never left; COMPLETED only to take in new tasks.
local ACTIVE_STATUS = {INITIALIZED = true, QUEUED = true, RUNNING = true}
local function refresh_run_status(run_id, seen)
  local rkey = key('run', run_id)
  local old = jget(rkey, 'status', 'INITIALIZED')
  local function n(field) return tonumber(redis.call('HGET', rkey, field) or '0') end
  -- A COMPLETED run reopens when new tasks join it (more work launched into its workspace, or
  -- tasks first seen at a worker when the publisher is not tracked); FAILED and CANCELLED stay.
  local reopened = old == 'COMPLETED'
    and n('tasks_succeeded') + n('tasks_revoked') < n('tasks_queued')
  if not ACTIVE_STATUS[old] and not reopened then return old end
  local done = n('tasks_queued') > 0 and n('publishing') <= 0
    and n('tasks_succeeded') + n('tasks_revoked') >= n('tasks_queued')
  if done and not settled(rkey) then
    redis.call('SADD', key('run', 'settling'), run_id)
    done = false
  end
  local new = old
  if n('tasks_failed') > 0 then
    new = 'FAILED'
  elseif done then
    new = 'COMPLETED'
  elseif seen['started'] or n('tasks_started') > 0 then
    new = 'RUNNING'
  elseif (seen['published'] or n('tasks_queued') > 0) and old == 'INITIALIZED' then
    new = 'QUEUED'
  end
  if new ~= old then
    redis.call('SREM', key('run', 'status', old), run_id)
    redis.call('SADD', key('run', 'status', new), run_id)
    redis.call('HSET', rkey, 'status', cjson.encode(new))
  end
  return new
end

-- A running physical worker that records ``stale_after`` (seconds) keeps a key that expires
-- after it; readers see STALLED once the key is gone, judged by the Redis server's clock.
local function refresh_liveness(pw_id)
  local pkey = key('pw', pw_id)
  local stale_after = jget(pkey, 'stale_after', nil)
  if stale_after and jget(pkey, 'status', 'RUNNING') == 'RUNNING' then
    redis.call('SET', key('pw', pw_id, 'alive'), '1', 'PX', math.max(1, math.floor(stale_after * 1000)))
  else
    redis.call('DEL', key('pw', pw_id, 'alive'))
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
  redis.call('DEL', rkey, key('run', run_id, 'tasks'))
  return 1
end

--@@ create_study
-- ARGV: P, name digest, id, field pairs... -> {1, id} created, {0, existing id}, {-1} id clash
local existing = redis.call('HGET', key('study', 'name'), ARGV[2])
if existing then return {0, existing} end
local skey = key('study', ARGV[3])
if redis.call('EXISTS', skey) == 1 then return {-1} end
redis.call('HSET', key('study', 'name'), ARGV[2], ARGV[3])
redis.call('SADD', key('study', 'ids'), ARGV[3])
hset_pairs(skey, ARGV, 4, true)
return {1, ARGV[3]}

--@@ create_run
-- ARGV: P, workspace digest, sequence ('' = allocate), study id, status, queue count n,
--       n queues, field pairs...
-- Runs are numbered by a per-prefix sequence ({P}:run:seq): ids sort by creation and index
-- sets hold small integers, which Redis stores as compact intsets.
-- -> {1, sequence, attached worker ids...} | {0, existing sequence} | {-1} sequence taken
--    (import) | {-2} study missing
local existing = redis.call('HGET', key('run', 'workspace'), ARGV[2])
if existing then return {0, existing} end
if redis.call('EXISTS', key('study', ARGV[4])) == 0 then return {-2} end
local seq_key = key('run', 'seq')
local run_id = ARGV[3]
if run_id == '' then
  run_id = tostring(redis.call('INCR', seq_key))
else
  if redis.call('EXISTS', key('run', run_id)) == 1 then return {-1} end
  if tonumber(redis.call('GET', seq_key) or '0') < tonumber(run_id) then
    redis.call('SET', seq_key, run_id)
  end
end
local rkey = key('run', run_id)
local nq = tonumber(ARGV[6])
local lw_keys = {}
for i = 7, 6 + nq do
  redis.call('SADD', key('run', 'queue', ARGV[i]), run_id)
  lw_keys[#lw_keys + 1] = key('lw', 'queue', ARGV[i])
end
redis.call('HSET', key('run', 'workspace'), ARGV[2], run_id)
hset_pairs(rkey, ARGV, 7 + nq, true)
redis.call('SADD', key('study', ARGV[4], 'runs'), run_id)
redis.call('SADD', key('run', 'status', ARGV[5]), run_id)
local workers = {}
if #lw_keys > 0 then workers = redis.call('SUNION', unpack(lw_keys)) end
table.sort(workers)
for _, w in ipairs(workers) do redis.call('SADD', key('lw', w, 'runs'), run_id) end
if #workers > 0 then hset_full(rkey, 'workers', encode_list(workers)) end
redis.call('LPUSH', key('run', 'recent'), run_id)
redis.call('LTRIM', key('run', 'recent'), 0, 49)
-- An imported run that was still settling goes on waiting where settle_runs looks.
if ACTIVE_STATUS[ARGV[5]] and redis.call('HEXISTS', rkey, 'settle_until') == 1 then
  redis.call('SADD', key('run', 'settling'), run_id)
end
local result = {1, run_id}
for _, w in ipairs(workers) do result[#result + 1] = w end
return result

--@@ delete_runs
-- ARGV: P, run ids... -> number deleted
local n = 0
for i = 2, #ARGV do n = n + delete_run(ARGV[i]) end
return n

--@@ delete_study
-- ARGV: P, study id, remove runs (1|0), max runs to handle now
-- -> {1} deleted | {2, runs left} call again | {0} not found
local sid = ARGV[2]
local skey = key('study', sid)
if redis.call('EXISTS', skey) == 0 then return {0} end
local runs_key = key('study', sid, 'runs')
local batch = redis.call('SRANDMEMBER', runs_key, tonumber(ARGV[4]))
for _, run_id in ipairs(batch) do
  if ARGV[3] == '1' then
    delete_run(run_id)
  else
    redis.call('HSET', key('run', run_id), 'study_id', 'null')
  end
  redis.call('SREM', runs_key, run_id)
end
local left = redis.call('SCARD', runs_key)
if left > 0 then return {2, left} end
local nd = digest(jget(skey, 'name', ''))
if redis.call('HGET', key('study', 'name'), nd) == sid then redis.call('HDEL', key('study', 'name'), nd) end
redis.call('SREM', key('study', 'ids'), sid)
redis.call('DEL', skey, runs_key)
return {1}

--@@ create_logical_worker
-- ARGV: P, id, name, queue count n, n queues, field pairs... -> 1 created | 0 existed
local wkey = key('lw', ARGV[2])
if redis.call('EXISTS', wkey) == 1 then return 0 end
local nq = tonumber(ARGV[4])
for i = 5, 4 + nq do redis.call('SADD', key('lw', 'queue', ARGV[i]), ARGV[2]) end
redis.call('SADD', key('lw', 'name', ARGV[3]), ARGV[2])
redis.call('SADD', key('lw', 'ids'), ARGV[2])
hset_pairs(wkey, ARGV, 5 + nq, true)
return 1

--@@ delete_logical_workers
-- ARGV: P, ids... -> number deleted
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local wkey = key('lw', id)
  if redis.call('EXISTS', wkey) == 1 then
    for _, q in ipairs(jget(wkey, 'queues', {})) do redis.call('SREM', key('lw', 'queue', q), id) end
    redis.call('SREM', key('lw', 'name', jget(wkey, 'name', '')), id)
    redis.call('SREM', key('lw', 'ids'), id)
    for _, run_id in ipairs(redis.call('SMEMBERS', key('lw', id, 'runs'))) do
      list_remove(key('run', run_id), 'workers', id)
    end
    for _, pw in ipairs(redis.call('SMEMBERS', key('lw', id, 'physical'))) do
      if jget(key('pw', pw), 'logical_worker_id', nil) == id then
        redis.call('HDEL', key('pw', pw), 'logical_worker_id')
      end
    end
    redis.call('DEL', wkey, key('lw', id, 'runs'), key('lw', id, 'physical'))
    n = n + 1
  end
end
return n

--@@ link_run_worker
-- ARGV: P, run id, logical worker id, '1' link | '0' unlink -> 1 changed | 0 unchanged | -1 run
-- missing | -2 worker missing
local rkey, wkey = key('run', ARGV[2]), key('lw', ARGV[3])
if redis.call('EXISTS', rkey) == 0 then return -1 end
if ARGV[4] == '1' then
  if redis.call('EXISTS', wkey) == 0 then return -2 end
  redis.call('SADD', key('lw', ARGV[3], 'runs'), ARGV[2])
  return list_add(rkey, 'workers', ARGV[3])
end
redis.call('SREM', key('lw', ARGV[3], 'runs'), ARGV[2])
return list_remove(rkey, 'workers', ARGV[3])

--@@ upsert_physical_worker
-- ARGV: P, name digest, new id, pid json or '', logical worker id or '',
--       n1, n1 pairs set always, n2, n2 pairs set when created or restarted, pairs set on create
-- A different pid on a worker that had started before is a restart: restart_count + 1.
-- -> {1, id} created | {2, id} restarted | {0, id} updated | {-1} id clash | {-3} lw missing
local existing = redis.call('HGET', key('pw', 'name'), ARGV[2])
local pid, lw = ARGV[4], ARGV[5]
if lw ~= '' and redis.call('EXISTS', key('lw', lw)) == 0 then return {-3} end
local always_first = 7
local start_count_at = always_first + 2 * tonumber(ARGV[6])
local start_first = start_count_at + 1
local create_first = start_first + 2 * tonumber(ARGV[start_count_at])
local id, outcome
if not existing then
  id = ARGV[3]
  if redis.call('EXISTS', key('pw', id)) == 1 then return {-1} end
  redis.call('HSET', key('pw', 'name'), ARGV[2], id)
  redis.call('SADD', key('pw', 'ids'), id)
  outcome = 1
else
  id = existing
  -- Pids are compared as stored JSON text: Lua numbers would round large integers.
  local old_pid = redis.call('HGET', key('pw', id), 'pid')
  if old_pid == 'null' then old_pid = false end
  local started = old_pid or redis.call('HEXISTS', key('pw', id), 'latest_start_time') == 1
  outcome = 0
  if pid ~= '' and started and pid ~= old_pid then
    outcome = 2
    redis.call('HINCRBY', key('pw', id), 'restart_count', 1)
  end
end
local pkey = key('pw', id)
local old_status = jget(pkey, 'status', nil)
local old_host = jget(pkey, 'host', nil)
local old_lw = jget(pkey, 'logical_worker_id', nil)
if outcome == 1 then
  for i = create_first, #ARGV, 2 do hset_full(pkey, ARGV[i], ARGV[i + 1]) end
end
if outcome ~= 0 then
  for i = start_first, create_first - 1, 2 do hset_full(pkey, ARGV[i], ARGV[i + 1]) end
end
for i = always_first, start_count_at - 1, 2 do hset_full(pkey, ARGV[i], ARGV[i + 1]) end
local new_status = jget(pkey, 'status', 'RUNNING')
if old_status ~= new_status then
  if old_status then redis.call('SREM', key('pw', 'status', old_status), id) end
  redis.call('SADD', key('pw', 'status', new_status), id)
end
local new_host = jget(pkey, 'host', nil)
if old_host ~= new_host then
  if old_host then redis.call('SREM', key('pw', 'host', old_host), id) end
  if new_host then redis.call('SADD', key('pw', 'host', new_host), id) end
end
if lw ~= '' then hset_full(pkey, 'logical_worker_id', cjson.encode(lw)) end
local new_lw = jget(pkey, 'logical_worker_id', nil)
if old_lw ~= new_lw then
  if old_lw then redis.call('SREM', key('lw', old_lw, 'physical'), id) end
  if new_lw then redis.call('SADD', key('lw', new_lw, 'physical'), id) end
end
refresh_liveness(id)
return {outcome, id}

--@@ delete_physical_workers
-- ARGV: P, ids... -> number deleted
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local pkey = key('pw', id)
  if redis.call('EXISTS', pkey) == 1 then
    local lw = jget(pkey, 'logical_worker_id', nil)
    if lw then redis.call('SREM', key('lw', lw, 'physical'), id) end
    local host = jget(pkey, 'host', nil)
    if host then redis.call('SREM', key('pw', 'host', host), id) end
    redis.call('SREM', key('pw', 'status', jget(pkey, 'status', 'RUNNING')), id)
    local nd = digest(jget(pkey, 'name', ''))
    if redis.call('HGET', key('pw', 'name'), nd) == id then redis.call('HDEL', key('pw', 'name'), nd) end
    redis.call('SREM', key('pw', 'ids'), id)
    redis.call('DEL', pkey, key('pw', id, 'alive'))
    n = n + 1
  end
end
return n

--@@ update_fields
-- ARGV: P, entity ('run'|'pw'), id, then pairs (field, json; '' deletes) to set
-- -> 1 updated | -1 not found | -2 new logical worker missing
local entity, id = ARGV[2], ARGV[3]
local rkey = key(entity, id)
if redis.call('EXISTS', rkey) == 0 then return -1 end
local changes = pairs_to_map(ARGV, 4)
local new_lw = changes['logical_worker_id']
if entity == 'pw' and new_lw and new_lw ~= '' and new_lw ~= 'null' then
  -- Checked before any write, so a refused update changes nothing.
  if redis.call('EXISTS', key('lw', cjson.decode(new_lw))) == 0 then return -2 end
end
local default_status = entity == 'run' and 'INITIALIZED' or 'RUNNING'
if changes['status'] then
  local old = jget(rkey, 'status', default_status)
  local new = cjson.decode(changes['status'])
  if old ~= new then
    redis.call('SREM', key(entity, 'status', old), id)
    redis.call('SADD', key(entity, 'status', new), id)
  end
end
if entity == 'pw' and changes['host'] then
  local old = jget(rkey, 'host', nil)
  if old then redis.call('SREM', key('pw', 'host', old), id) end
  if changes['host'] ~= '' and changes['host'] ~= 'null' then
    redis.call('SADD', key('pw', 'host', cjson.decode(changes['host'])), id)
  end
end
if entity == 'pw' and changes['logical_worker_id'] then
  local old = jget(rkey, 'logical_worker_id', nil)
  if old then redis.call('SREM', key('lw', old, 'physical'), id) end
  local new = changes['logical_worker_id']
  if new ~= '' and new ~= 'null' then
    redis.call('SADD', key('lw', cjson.decode(new), 'physical'), id)
  end
end
hset_pairs(rkey, ARGV, 4)
if entity == 'pw' then refresh_liveness(id) end
return 1

--@@ add_run_queues
-- ARGV: P, run id, queues... -> {added count, attached worker ids...} | {-1} run missing
local run_id = ARGV[2]
local rkey = key('run', run_id)
if redis.call('EXISTS', rkey) == 0 then return {-1} end
local added, lw_keys = 0, {}
for i = 3, #ARGV do
  if list_add(rkey, 'queues', ARGV[i]) == 1 then
    added = added + 1
    redis.call('SADD', key('run', 'queue', ARGV[i]), run_id)
    lw_keys[#lw_keys + 1] = key('lw', 'queue', ARGV[i])
  end
end
local result = {added}
if #lw_keys > 0 then
  for _, w in ipairs(redis.call('SUNION', unpack(lw_keys))) do
    redis.call('SADD', key('lw', w, 'runs'), run_id)
    if list_add(rkey, 'workers', w) == 1 then result[#result + 1] = w end
  end
end
return result

--@@ find_ids
-- ARGV: P, JSON list of groups; a group is a list of set keys (their union) or {"ids": [...]}.
-- Returns the ids in every group (intersection of unions), reading the smallest group first.
local groups = cjson.decode(ARGV[2])
local function group_size(g)
  if g['ids'] then return #g['ids'] end
  local n = 0
  for _, k in ipairs(g) do n = n + redis.call('SCARD', k) end
  return n
end
local function group_has(g, member)
  if g['ids'] then
    for _, v in ipairs(g['ids']) do if v == member then return true end end
    return false
  end
  for _, k in ipairs(g) do
    if redis.call('SISMEMBER', k, member) == 1 then return true end
  end
  return false
end
local best, best_size = 1, nil
for i, g in ipairs(groups) do
  local size = group_size(g)
  if best_size == nil or size < best_size then best, best_size = i, size end
end
local base = groups[best]
local candidates
if base['ids'] then
  candidates = base['ids']
elseif #base == 0 then
  candidates = {}
else
  candidates = redis.call('SUNION', unpack(base))
end
local result = {}
for _, member in ipairs(candidates) do
  local keep = true
  for i, g in ipairs(groups) do
    if i ~= best and not group_has(g, member) then keep = false; break end
  end
  if keep then result[#result + 1] = member end
end
return result

--@@ fetch
-- ARGV: P, entity, id or '', unique index name or '', value digest or '', relation suffixes...
-- Resolves an id first, then the unique index; returns {id, n, n field/value items, then for
-- each relation: count, members...} or {} when nothing matches. One round trip either way.
local entity = ARGV[2]
local id = nil
if ARGV[3] ~= '' and redis.call('EXISTS', key(entity, ARGV[3])) == 1 then id = ARGV[3] end
if not id and ARGV[4] ~= '' then
  id = redis.call('HGET', key(entity, ARGV[4]), ARGV[5])
  if not id then return {} end
end
if not id then return {} end
local flat = redis.call('HGETALL', key(entity, id))
local out = {id, #flat}
for _, v in ipairs(flat) do out[#out + 1] = v end
for i = 6, #ARGV do
  local members = redis.call('SMEMBERS', key(entity, id, ARGV[i]))
  out[#out + 1] = #members
  for _, m in ipairs(members) do out[#out + 1] = m end
end
if entity == 'pw' then out[#out + 1] = redis.call('EXISTS', key('pw', id, 'alive')) end
return out

--@@ task_events
-- ARGV: P, JSON list of events [run number, task id, kind, queue (published only)],
--       updated_at json, settle microseconds (optional).
-- kind: published | received | started | retried | succeeded | failed | revoked | ran (started,
-- then succeeded). received: queued, first seen at a worker; the run's settle_until becomes
-- now + settle. Events of one process
-- arrive in order; events of different processes may interleave, so every kind is accepted in
-- any state and each task id counts once per counter. Per-task states live in {P}:run:<id>:tasks:
-- q queued, r requeued after a start (retry), s started, S/F/R succeeded/failed/revoked.
-- -> list of run ids that were missing (their events were dropped)
local FINAL = {succeeded = 'S', failed = 'F', revoked = 'R'}
local events = cjson.decode(ARGV[2])
local missing, touched, order = {}, {}, {}
local exists, known_queues, states, stored, seen_tasks, counts = {}, {}, {}, {}, {}, {}
-- First pass: which runs exist, and the stored state of every task of the batch, read with one
-- HMGET per run (in slices under Lua's unpack limit) rather than one HGET per event.
for _, ev in ipairs(events) do
  local run_id, task = ev[1], ev[2]
  if exists[run_id] == nil then
    exists[run_id] = redis.call('EXISTS', key('run', run_id)) == 1
    if exists[run_id] then
      order[#order + 1] = run_id
      touched[run_id], states[run_id], stored[run_id], seen_tasks[run_id] = {}, {}, {}, {}
      counts[run_id] = {}
    elseif not missing[run_id] then
      missing[run_id] = true; missing[#missing + 1] = run_id
    end
  end
  if exists[run_id] and stored[run_id][task] == nil then
    stored[run_id][task] = false
    seen_tasks[run_id][#seen_tasks[run_id] + 1] = task
  end
end
for _, run_id in ipairs(order) do
  local tasks = seen_tasks[run_id]
  for first = 1, #tasks, 1000 do
    local slice = {unpack(tasks, first, math.min(first + 999, #tasks))}
    local values = redis.call('HMGET', key('run', run_id, 'tasks'), unpack(slice))
    for i, task in ipairs(slice) do
      stored[run_id][task] = values[i]  -- false when absent
      states[run_id][task] = values[i]
    end
  end
end
local function bump(run_id, counter)
  counts[run_id][counter] = (counts[run_id][counter] or 0) + 1
end
-- Second pass: the events in order, counting in memory.
for _, ev in ipairs(events) do
  local run_id, task, kind, queue = ev[1], ev[2], ev[3], ev[4]
  if exists[run_id] then
    local rkey = key('run', run_id)
    local state = states[run_id][task]
    if not state then
      bump(run_id, 'tasks_queued')
      state = 'q'
    end
    if kind == 'started' or kind == 'ran' then
      if state == 'q' then bump(run_id, 'tasks_started') end
      if state == 'q' or state == 'r' then state = 's' end
      touched[run_id]['started'] = true
      -- 'ran': started and succeeded, coalesced by the sender when both fell in one batch.
      if kind == 'ran' then kind = 'succeeded' end
    end
    if kind == 'received' then
      touched[run_id]['received'] = true
      kind = 'published'
    end
    if kind == 'published' or kind == 'retried' then
      if kind == 'retried' then bump(run_id, 'tasks_retried') end
      if kind == 'retried' and (state == 's' or state == 'r') then state = 'r' end
      -- A batch repeats the same run and queue for many tasks: look the queue up once.
      if queue and not known_queues[run_id .. '\n' .. queue] then
        known_queues[run_id .. '\n' .. queue] = true
        if list_add(rkey, 'queues', queue) == 1 then
          redis.call('SADD', key('run', 'queue', queue), run_id)
          for _, w in ipairs(redis.call('SMEMBERS', key('lw', 'queue', queue))) do
            redis.call('SADD', key('lw', w, 'runs'), run_id)
            list_add(rkey, 'workers', w)
          end
        end
      end
      touched[run_id]['published'] = true
    elseif FINAL[kind] then
      if state == 'q' or state == 'r' or state == 's' then
        if state == 'q' and kind ~= 'revoked' then bump(run_id, 'tasks_started') end
        bump(run_id, 'tasks_' .. kind)
        state = FINAL[kind]
      end
    end
    states[run_id][task] = state
  end
end
-- Write back: one HINCRBY per counter and one HSET (in slices) per run, then the status.
local settle = tonumber(ARGV[4] or '0') or 0
for _, run_id in ipairs(order) do
  for counter, n in pairs(counts[run_id]) do
    redis.call('HINCRBY', key('run', run_id), counter, n)
  end
  local fields = {}
  for _, task in ipairs(seen_tasks[run_id]) do
    if states[run_id][task] ~= stored[run_id][task] then
      fields[#fields + 1] = task
      fields[#fields + 1] = states[run_id][task]
    end
    if #fields >= 1000 then
      redis.call('HSET', key('run', run_id, 'tasks'), unpack(fields))
      fields = {}
    end
  end
  if #fields > 0 then redis.call('HSET', key('run', run_id, 'tasks'), unpack(fields)) end
  if settle > 0 and touched[run_id]['received'] then
    redis.call('HSET', key('run', run_id), 'settle_until', string.format('%.0f', now_micros() + settle))
  end
  refresh_run_status(run_id, touched[run_id])
  redis.call('HSET', key('run', run_id), 'updated_at', ARGV[3])
end
return missing

--@@ change_publishing
-- ARGV: P, run id, delta, updated_at json -> new status, or '' if the run is missing
local rkey = key('run', ARGV[2])
if redis.call('EXISTS', rkey) == 0 then return '' end
local left = redis.call('HINCRBY', rkey, 'publishing', tonumber(ARGV[3]))
if left <= 0 then redis.call('HDEL', rkey, 'publishing') end
redis.call('HSET', rkey, 'updated_at', ARGV[4])
return refresh_run_status(ARGV[2], {})

--@@ settle_runs
-- ARGV: P, updated_at json -> ids of the runs that completed
-- Every run waiting in {P}:run:settling whose settle_until has passed leaves the set and gets
-- its status refreshed (COMPLETED if its tasks are all done); missing runs just leave.
local completed = {}
for _, run_id in ipairs(redis.call('SMEMBERS', key('run', 'settling'))) do
  local rkey = key('run', run_id)
  if redis.call('EXISTS', rkey) == 0 then
    redis.call('SREM', key('run', 'settling'), run_id)
  elseif settled(rkey) then
    redis.call('SREM', key('run', 'settling'), run_id)
    local old = jget(rkey, 'status', 'INITIALIZED')
    local new = refresh_run_status(run_id, {})
    if new ~= old then
      redis.call('HSET', rkey, 'updated_at', ARGV[2])
      if new == 'COMPLETED' then completed[#completed + 1] = run_id end
    end
  end
end
return completed

--@@ set_run_status
-- ARGV: P, run id, new status, updated_at json, allowed old statuses...
-- -> {1, old} changed | {0, old} refused (old status not allowed) | {-1} missing
local run_id = ARGV[2]
local rkey = key('run', run_id)
if redis.call('EXISTS', rkey) == 0 then return {-1} end
local old = jget(rkey, 'status', 'INITIALIZED')
local allowed = false
for i = 5, #ARGV do if ARGV[i] == old then allowed = true end end
if not allowed then return {0, old} end
if old ~= ARGV[3] then
  redis.call('SREM', key('run', 'status', old), run_id)
  redis.call('SADD', key('run', 'status', ARGV[3]), run_id)
  redis.call('HSET', rkey, 'status', cjson.encode(ARGV[3]))
end
redis.call('HSET', rkey, 'updated_at', ARGV[4])
return {1, old}

--@@ attach_worker_to_runs
-- ARGV: P, logical worker id -> ids of the active runs it was newly attached to
local lw = ARGV[2]
if redis.call('EXISTS', key('lw', lw)) == 0 then return {} end
local attached = {}
for _, q in ipairs(jget(key('lw', lw), 'queues', {})) do
  -- SINTER walks the smaller set, so the cost follows the active runs, not the whole history.
  for status, _ in pairs(ACTIVE_STATUS) do
    for _, run_id in ipairs(redis.call('SINTER', key('run', 'status', status), key('run', 'queue', q))) do
      redis.call('SADD', key('lw', lw, 'runs'), run_id)
      if list_add(key('run', run_id), 'workers', lw) == 1 then attached[#attached + 1] = run_id end
    end
  end
end
return attached

--@@ heartbeat
-- ARGV: P, physical worker id, heartbeat_timestamp json -> 1 | 0 when the worker is missing
local pkey = key('pw', ARGV[2])
if redis.call('EXISTS', pkey) == 0 then return 0 end
redis.call('HSET', pkey, 'heartbeat_timestamp', ARGV[3])
refresh_liveness(ARGV[2])
return 1

--@@ repair
-- ARGV: P, JSON list of [op, key, a, b]: ["srem", set, member], ["list_remove", hash, field,
-- member], ["hset", hash, field, json], ["hdel", hash, field]. Used by garbage collection to
-- drop references to records that no longer exist; every key is under P.
local n = 0
for _, op in ipairs(cjson.decode(ARGV[2])) do
  local name, k = op[1], op[2]
  if string.sub(k, 1, #P + 1) == P .. ':' then
    if name == 'srem' then n = n + redis.call('SREM', k, op[3])
    elseif name == 'list_remove' then n = n + list_remove(k, op[3], op[4])
    elseif name == 'hset' then redis.call('HSET', k, op[3], op[4]); n = n + 1
    elseif name == 'hdel' then n = n + redis.call('HDEL', k, op[3])
    end
  end
end
return n
