-- The task ledger: the Lua twin of ``apply_event`` in stores/rules.py (keep the two alike; the
-- property test tests/stores/test_stores_agree.py compares them). Uses lib/status.lua.
--
-- {P}:run:<n>:tasks   packed task id (prelude: pack_id) -> record: state letter, then
--                     comma-separated base-36 fields attempts (glued to the letter), name#,
--                     queue#, worker#, queued, started, finished, row: #s index
--                     {P}:run:<n>:dict, times are milliseconds since the run's creation, row is
--                     the record's place in {P}:run:<n>:rows; trailing empty fields are left out
--                     (a wave-1 record is just its letter; older records have no row)
-- {P}:run:<n>:dict    'n'|'q'|'w' .. text -> index, '#' .. index -> kind .. text, '#' -> last,
--                     '*' -> rows used, '%' .. letter -> records in that state
-- {P}:run:<n>:rows    ROW bytes per record, in the order the ledger first saw them: the id's
--                     16 bytes (zeros for an id that is no UUID: see xids), the state letter,
--                     then name#, queue# and worker# a byte each (0 none, 255 that index or a
--                     higher one: read the record); a deleted record's letter is '-'; rows
--                     past the dictionary's '*' are padding (letter 0)
-- {P}:run:<n>:xids    row (decimal) -> task id, for the ids that are no UUID
-- {P}:task:s:<letter> runs with records in that state; {P}:task:n|q|w:<value hash> runs with
--                     records of that task name, queue or worker (prelude: value_hash)
-- {P}:run:<n>:errors  task id -> failure or reason lost
-- {P}:run:<n>:waiting queue ('' unknown) -> tasks of the run queued or retrying there
-- {P}:run:<n>:msgs    task id -> the message a worker received (tracking_keep_messages), until
--                     the task finishes
-- {P}:node:<digest>:inflight  "<run>\t<task>" of the tasks a worker node holds (c, s)
-- The run hash keeps _inflight (its tasks in c or s) and _last_finish (microseconds).

local UNFINISHED = {q = true, c = true, s = true, r = true, L = true}
local IN_FLIGHT = {c = true, s = true}
local RAN_ONCE = {s = true, r = true, S = true, F = true}
local WAITING = {q = true, r = true}
local FINAL_LETTER = {succeeded = 'S', failed = 'F', revoked = 'R'}
local FINAL_COUNTER = {S = 'tasks_succeeded', F = 'tasks_failed', R = 'tasks_revoked'}
local IMPLY_START = {retried = true, succeeded = true, failed = true}
local JOINS_QUEUE = {published = true, received = true, retried = true}
local B36 = '0123456789abcdefghijklmnopqrstuvwxyz'

local function b36(n)
  if n >= 0 and n < 36 then return string.sub(B36, n + 1, n + 1) end
  local sign = ''
  if n < 0 then sign, n = '-', -n end
  local out = ''
  while n > 0 do
    local d = n % 36
    out = string.sub(B36, d + 1, d + 1) .. out
    n = (n - d) / 36
  end
  return sign .. out
end

local function unb36(s)
  if s == nil or s == '' then return nil end
  if string.sub(s, 1, 1) == '-' then return -tonumber(string.sub(s, 2), 36) end
  return tonumber(s, 36)
end

local NODE_KEYS = {}  -- worker -> its in-flight set, for this call

local function node_key(worker)
  local found = NODE_KEYS[worker]
  if not found then
    found = key('node', string.sub(redis.sha1hex(worker), 1, 24), 'inflight')
    NODE_KEYS[worker] = found
  end
  return found
end

local function opt(v)
  if v == nil or v == cjson.null or v == '' then return nil end
  return v
end

local ROW = 20
local ZERO_ID = string.rep('\0', 16)

local function u8(n)
  if n == nil then return '\0' end
  return string.char(math.min(n, 255))
end

-- A row's columns after the id: state letter, name#, queue# and worker#, a byte each.
local function row_columns(ctx, row)
  local function idx(kind, value)
    if value == nil then return nil end
    return tonumber(ctx.dict[kind .. value], 36)
  end
  return row.state .. u8(idx('n', row.name)) .. u8(idx('q', row.queue))
    .. u8(idx('w', row.worker))
end

-- One run's context while a batch is applied: its dictionary, rows and changes.
local function open_run(run_id)
  local rkey = key('run', run_id)
  upgrade_wave_1(rkey, run_id)  -- before its records are read and their counts changed
  local ctx = {id = run_id, rkey = rkey, rows = {}, stored = {}, order = {}, counts = {},
    dict = {}, rdict = {}, errors = {}, msgs = {}, queues = {}, started_at = nil, last_finish = nil,
    settle = false, ends = false, packed = {}, uuid = {}, used = 0, letters = {}, changed = {}}
  ctx.created_ms = math.floor((tonumber(redis.call('HGET', rkey, 'created_at')) or 0) / 1000)
  local flat = redis.call('HGETALL', key('run', run_id, 'dict'))
  for i = 1, #flat, 2 do
    local f = flat[i]
    local first = string.sub(f, 1, 1)
    if first == '#' and #f > 1 then
      ctx.rdict[f] = string.sub(flat[i + 1], 2)
    elseif first == '*' then
      ctx.used = tonumber(flat[i + 1])
    elseif first == '%' then
      ctx.letters[string.sub(f, 2)] = tonumber(flat[i + 1])
    elseif first ~= '#' then
      ctx.dict[f] = flat[i + 1]
    end
  end
  ctx.used_before = ctx.used
  return ctx
end

local RECORD = '^(.)([^,]*),?([^,]*),?([^,]*),?([^,]*),?([^,]*),?([^,]*),?([^,]*),?([^,]*)'

local function decode(ctx, raw)
  local letter, attempts, name, queue, worker, q, s, f, row = string.match(raw, RECORD)
  local rdict = ctx.rdict
  -- A record with a row counts each time from the one before it (queued from the run's
  -- creation, started from queued, finished from started, skipping absent ones); an older
  -- record counts every time from the run's creation.
  local chained, base = row ~= '', ctx.created_ms
  local times = {q, s, f}
  for i = 1, 3 do
    local rel = times[i]
    if rel == '' then
      times[i] = nil
    else
      local ms = (chained and base or ctx.created_ms) + unb36(rel)
      base = ms
      times[i] = ms * 1000
    end
  end
  local tries = attempts ~= '' and unb36(attempts) or 0
  -- A started, retrying or finished-by-running record with no attempt written ran once
  -- (encode leaves that one out; a wave-1 record is its letter alone).
  if tries == 0 and RAN_ONCE[letter] then tries = 1 end
  return {state = letter, attempts = tries,
    name = name ~= '' and rdict['#' .. name] or nil,
    queue = queue ~= '' and rdict['#' .. queue] or nil,
    worker = worker ~= '' and rdict['#' .. worker] or nil,
    q = times[1], s = times[2], f = times[3], row = row ~= '' and unb36(row) or nil}
end

local function index_of(ctx, kind, value)
  if value == nil then return '' end
  local f = kind .. value
  local idx = ctx.dict[f]
  if not idx then
    idx = b36(redis.call('HINCRBY', key('run', ctx.id, 'dict'), '#', 1))
    redis.call('HSET', key('run', ctx.id, 'dict'), f, idx, '#' .. idx, f)
    redis.call('SADD', key('task', kind, value_hash(value)), ctx.id)
    ctx.dict[f] = idx
    ctx.rdict['#' .. idx] = value
  end
  return idx
end

local function encode(ctx, row)
  local base, chained = ctx.created_ms, row.row ~= nil
  local function time(t)
    if t == nil then return '' end
    local ms = math.floor(t / 1000)
    local rel = ms - base
    if chained then base = ms end
    return b36(rel)
  end
  -- One attempt of a record that ran is left out: decode reads none as one for those letters.
  local attempts = row.attempts
  if attempts == 1 and RAN_ONCE[row.state] then attempts = 0 end
  local fields = {attempts > 0 and b36(attempts) or '', index_of(ctx, 'n', row.name),
    index_of(ctx, 'q', row.queue), index_of(ctx, 'w', row.worker), time(row.q), time(row.s),
    time(row.f), row.row and b36(row.row) or ''}
  local n = #fields
  while n > 0 and fields[n] == '' do n = n - 1 end
  return row.state .. table.concat(fields, ',', 1, n)
end

local function bump(ctx, counter, by)
  ctx.counts[counter] = (ctx.counts[counter] or 0) + (by or 1)
end

local function target(row, kind, worker, at)
  local old = row.state
  if kind == 'published' then
    if old == 'L' then return 'q' end
    return old
  end
  if kind == 'received' then
    if old == 'q' or old == 'r' or old == 'L' or old == 'c' then return 'c' end
    if old == 's' then
      if worker ~= row.worker or (at and row.s and at > row.s) then return 'c' end
      return 's'
    end
    return old
  end
  if kind == 'started' or kind == 'ran' then
    if UNFINISHED[old] then return 's' end
    return old
  end
  if kind == 'retried' then
    if UNFINISHED[old] then return 'r' end
    return old
  end
  if kind == 'lost' then
    if IN_FLIGHT[old] then return 'L' end
    return old
  end
  if UNFINISHED[old] then return FINAL_LETTER[kind] end
  return old
end

local function change(ctx, task, row, new, worker, err, at)
  local old = row.state
  if IN_FLIGHT[new] and worker then row.worker = worker end
  if new == old then return end
  if old == 'L' then bump(ctx, 'tasks_lost', -1) end
  if new == 'L' or new == 'F' then
    row.error = err
    ctx.errors[task] = err or false
  end
  if new == 'L' then bump(ctx, 'tasks_lost') end
  if FINAL_COUNTER[new] then
    bump(ctx, FINAL_COUNTER[new])
    row.f = at
    if not ctx.last_finish or at > ctx.last_finish then ctx.last_finish = at end
  end
  row.state = new
end

local function first_start(ctx, at)
  if not ctx.started_at or at < ctx.started_at then ctx.started_at = at end
end

-- ev: {run, task, kind, queue, name, worker, at, error, flags, ended} (the wire form).
local function apply_one(ctx, ev)
  local task, kind = ev[2], ev[3]
  local queue, name, worker = opt(ev[4]), opt(ev[5]), opt(ev[6])
  local at, err, flags, ended = opt(ev[7]) or now_micros(), opt(ev[8]), opt(ev[9]) or '', opt(ev[10])
  local message = opt(ev[11])
  if message then ctx.msgs[task] = message end
  local row = ctx.rows[task]
  local new_task = not row
  if not row then
    row = {state = 'q', attempts = 0, q = at}
    ctx.rows[task] = row
    bump(ctx, 'tasks_queued')
  end
  if name and not row.name then row.name = name end
  if queue and not row.queue then row.queue = queue end
  if queue and JOINS_QUEUE[kind] then ctx.queues[queue] = true end
  if kind == 'started' or kind == 'ran' then
    row.attempts = row.attempts + 1
    if row.attempts == 1 then bump(ctx, 'tasks_started') end
    row.s = at
    first_start(ctx, at)
    if kind == 'ran' then
      change(ctx, task, row, target(row, kind, worker, at), worker, err, at)
      kind = 'succeeded'
      at = ended or at
    end
  end
  local new = target(row, kind, worker, at)
  if IMPLY_START[kind] and new ~= row.state and row.attempts == 0 then
    row.attempts = 1
    bump(ctx, 'tasks_started')
    first_start(ctx, at)
  end
  if kind == 'retried' then bump(ctx, 'tasks_retried') end
  change(ctx, task, row, new, worker, err, at)
  if string.find(flags, 'w', 1, true) and (new_task or kind == 'received') then ctx.settle = true end
  if string.find(flags, 'e', 1, true) and row.state == 'S' then ctx.ends = true end
end

local function load_rows(ctx, tasks)
  for first = 1, #tasks, 1000 do
    local slice, fields = {unpack(tasks, first, math.min(first + 999, #tasks))}, {}
    for i, task in ipairs(slice) do fields[i] = ctx.packed[task] end
    local values = redis.call('HMGET', key('run', ctx.id, 'tasks'), unpack(fields))
    for i, task in ipairs(slice) do
      if values[i] then
        local row = decode(ctx, values[i])
        ctx.rows[task] = row
        ctx.stored[task] = {state = row.state, name = row.name, queue = row.queue,
          worker = row.worker, raw = values[i]}
      end
    end
  end
end

-- Count a record leaving state ``old`` (nil: a new record) for state ``new`` (nil: deleted);
-- ``ctx.changed`` keeps each changed letter's count from before the batch.
local function count_letter(ctx, old, new)
  if old == new then return end
  if old and ctx.changed[old] == nil then ctx.changed[old] = ctx.letters[old] or 0 end
  if new and ctx.changed[new] == nil then ctx.changed[new] = ctx.letters[new] or 0 end
  if old then ctx.letters[old] = (ctx.letters[old] or 0) - 1 end
  if new then ctx.letters[new] = (ctx.letters[new] or 0) + 1 end
end

-- The length past ``n`` bytes at which a string fills its allocation: Redis's allocator
-- (jemalloc) hands out sizes in four steps per doubling, and a string keeps a 5-byte header
-- (9 past 64 KiB) and a NUL.
local function fill_allocation(n)
  local extra = n + 6 < 65536 and 6 or 10
  local want, p = n + extra, 64
  while p * 2 < want do p = p * 2 end
  local step = p / 4
  return math.ceil(want / step) * step - extra
end

-- Give a record a place in the row index: its row number, its id and its columns.
local function add_row(ctx, task, row)
  row.row = ctx.used
  ctx.used = ctx.used + 1
  local packed = ctx.packed[task]
  if not ctx.uuid[task] then
    redis.call('HSET', key('run', ctx.id, 'xids'), fmt(row.row), task)
    packed = ZERO_ID
  end
  local rows_key, needed = key('run', ctx.id, 'rows'), (row.row + 1) * ROW
  ctx.room = ctx.room or redis.call('STRLEN', rows_key)
  if needed > ctx.room then
    -- SETRANGE past the end would double the string's memory; a SET holds exactly what it
    -- is given: grow by a sixteenth, padded with empty rows (letter 0).
    local old = redis.call('GET', rows_key) or ''
    local size = fill_allocation(math.max(needed, #old + math.floor(#old / 16)))
    redis.call('SET', rows_key, old .. string.rep('\0', size - #old))
    ctx.room = size
  end
  redis.call('SETRANGE', rows_key, row.row * ROW, packed .. row_columns(ctx, row))
end

-- Store the state counts of the run's records, and its membership of the state sets.
local function write_letters(ctx)
  local dkey = key('run', ctx.id, 'dict')
  if ctx.used ~= ctx.used_before then redis.call('HSET', dkey, '*', ctx.used) end
  for letter, before in pairs(ctx.changed) do
    local n = ctx.letters[letter] or 0
    if n > 0 then
      redis.call('HSET', dkey, '%' .. letter, n)
      if before <= 0 then redis.call('SADD', key('task', 's', letter), ctx.id) end
    elseif before > 0 then
      redis.call('HDEL', dkey, '%' .. letter)
      redis.call('SREM', key('task', 's', letter), ctx.id)
    end
  end
end

-- A ledger written before the row index (records keyed by their id's text, no rows): key its
-- records by packed id and give each a row, in the order of their first time, once.
local function upgrade_ledger(ctx)
  local tkey = key('run', ctx.id, 'tasks')
  local flat = redis.call('HGETALL', tkey)
  local records = {}
  for i = 1, #flat, 2 do
    local row = decode(ctx, flat[i + 1])
    records[#records + 1] = {task = flat[i], row = row, first = row.q or row.s or row.f or 0}
  end
  table.sort(records, function(a, b)
    if a.first ~= b.first then return a.first < b.first end
    return a.task < b.task
  end)
  redis.call('DEL', tkey)
  local fields = {}
  for _, r in ipairs(records) do
    ctx.packed[r.task], ctx.uuid[r.task] = pack_id(r.task)
    add_row(ctx, r.task, r.row)
    count_letter(ctx, nil, r.row.state)
    fields[#fields + 1] = ctx.packed[r.task]
    fields[#fields + 1] = encode(ctx, r.row)
    if #fields >= 1000 then
      redis.call('HSET', tkey, unpack(fields))
      fields = {}
    end
  end
  if #fields > 0 then redis.call('HSET', tkey, unpack(fields)) end
  for f, _ in pairs(ctx.dict) do
    local kind = string.sub(f, 1, 1)
    if kind == 'n' or kind == 'q' or kind == 'w' then
      redis.call('SADD', key('task', kind, value_hash(string.sub(f, 2))), ctx.id)
    end
  end
  write_letters(ctx)
  ctx.used_before, ctx.changed = ctx.used, {}
end

local function add_queue(ctx, queue)
  local rkey = ctx.rkey
  if list_add(rkey, 'queues', queue) == 1 then
    redis.call('SADD', key('run', 'queue', queue), ctx.id)
    for _, w in ipairs(redis.call('SMEMBERS', key('lw', 'queue', queue))) do
      redis.call('SADD', key('lw', w, 'runs'), ctx.id)
      list_add(rkey, 'workers', w)
    end
  end
end

-- Store one run's changes: records, errors, waiting counts, the in-flight index, counters,
-- times and settle mark; then judge its status.
local function write_run(ctx, settle, updated_at)
  local rkey, fields, inflight = ctx.rkey, {}, 0
  local waiting = {}
  local rows_key = key('run', ctx.id, 'rows')
  for _, task in ipairs(ctx.order) do
    local row, before = ctx.rows[task], ctx.stored[task] or {}
    local raw
    if row.row == nil then
      -- The row's columns hold dictionary indexes: enter its values first.
      index_of(ctx, 'n', row.name)
      index_of(ctx, 'q', row.queue)
      index_of(ctx, 'w', row.worker)
      add_row(ctx, task, row)
      count_letter(ctx, before.state, row.state)
      raw = encode(ctx, row)
    else
      raw = encode(ctx, row)
      if before.state ~= row.state or before.name ~= row.name or before.queue ~= row.queue
          or before.worker ~= row.worker then
        redis.call('SETRANGE', rows_key, row.row * ROW + 16, row_columns(ctx, row))
        count_letter(ctx, before.state, row.state)
      end
    end
    if raw ~= before.raw then
      fields[#fields + 1] = ctx.packed[task]
      fields[#fields + 1] = raw
    end
    if #fields >= 1000 then
      redis.call('HSET', key('run', ctx.id, 'tasks'), unpack(fields))
      fields = {}
    end
    if before.state ~= row.state or before.queue ~= row.queue then
      if before.state and WAITING[before.state] then
        local q = before.queue or ''
        waiting[q] = (waiting[q] or 0) - 1
      end
      if WAITING[row.state] then
        local q = row.queue or ''
        waiting[q] = (waiting[q] or 0) + 1
      end
    end
    local was = before.state and IN_FLIGHT[before.state] and before.worker
    local is = IN_FLIGHT[row.state] and row.worker
    local member = ctx.id .. '\t' .. task
    if was ~= is then
      if was then redis.call('SREM', node_key(was), member) end
      if is then redis.call('SADD', node_key(is), member) end
    end
    if (before.state and IN_FLIGHT[before.state]) and not IN_FLIGHT[row.state] then
      inflight = inflight - 1
    elseif IN_FLIGHT[row.state] and not (before.state and IN_FLIGHT[before.state]) then
      inflight = inflight + 1
    end
  end
  if #fields > 0 then redis.call('HSET', key('run', ctx.id, 'tasks'), unpack(fields)) end
  write_letters(ctx)
  for task, err in pairs(ctx.errors) do
    if err then
      redis.call('HSET', key('run', ctx.id, 'errors'), task, err)
    else
      redis.call('HDEL', key('run', ctx.id, 'errors'), task)
    end
  end
  -- A kept message (tracking_keep_messages) stays until its task finishes.
  local msgs_kept = next(ctx.msgs) ~= nil
    or redis.call('EXISTS', key('run', ctx.id, 'msgs')) == 1
  for _, task in ipairs(msgs_kept and ctx.order or {}) do
    local row = ctx.rows[task]
    if FINAL_COUNTER[row.state] then
      if ctx.stored[task] == nil or not FINAL_COUNTER[ctx.stored[task].state] then
        redis.call('HDEL', key('run', ctx.id, 'msgs'), task)
      end
    elseif ctx.msgs[task] then
      redis.call('HSET', key('run', ctx.id, 'msgs'), task, ctx.msgs[task])
    end
  end
  for q, delta in pairs(waiting) do
    if delta ~= 0 and redis.call('HINCRBY', key('run', ctx.id, 'waiting'), q, delta) <= 0 then
      redis.call('HDEL', key('run', ctx.id, 'waiting'), q)
    end
  end
  if inflight ~= 0 then bump(ctx, '_inflight', inflight) end
  for counter, n in pairs(ctx.counts) do
    if n ~= 0 then redis.call('HINCRBY', rkey, counter, n) end
  end
  for q, _ in pairs(ctx.queues) do add_queue(ctx, q) end
  if ctx.started_at then
    local stored = tonumber(redis.call('HGET', rkey, 'started_at') or '')
    if not stored or ctx.started_at < stored then
      redis.call('HSET', rkey, 'started_at', fmt(ctx.started_at))
    end
  end
  if ctx.last_finish then
    local stored = tonumber(redis.call('HGET', rkey, '_last_finish') or '')
    if not stored or ctx.last_finish > stored then
      redis.call('HSET', rkey, '_last_finish', fmt(ctx.last_finish))
    end
  end
  if ctx.settle and settle > 0 then
    redis.call('HSET', rkey, 'settle_until', fmt(now_micros() + settle))
  end
  if ctx.ends then
    redis.call('HDEL', rkey, 'settle_until')
    redis.call('ZREM', key('run', 'settle'), ctx.id)
  end
  refresh_run_status(ctx.id, nil)
  redis.call('HSET', rkey, 'updated_at', updated_at)
end

-- A run's context for a batch, its ledger upgraded first if it is older than the row index.
local function open_ledger(run_id)
  local ctx = open_run(run_id)
  if ctx.used == 0 and redis.call('EXISTS', key('run', run_id, 'tasks')) == 1 then
    upgrade_ledger(ctx)
  end
  return ctx
end

-- Apply events (wire form) in order; returns the run ids that were missing (events dropped).
-- ``known`` (optional): {run id: workspace as stored} of the sender; a run whose stored
-- workspace differs is missing to it (an id given again after the store lost its data).
local function apply_events(events, settle, updated_at, known)
  local runs, order, missing = {}, {}, {}
  local pending = {}
  for _, ev in ipairs(events) do
    local run_id = ev[1]
    if runs[run_id] == nil and not missing[run_id] then
      local rkey = key('run', run_id)
      local expected = known and known[run_id]
      if redis.call('EXISTS', rkey) == 1
          and (not expected or hget_full(rkey, 'workspace') == expected) then
        runs[run_id] = open_ledger(run_id)
        order[#order + 1] = run_id
        pending[run_id] = {}
      else
        missing[run_id] = true
        missing[#missing + 1] = run_id
      end
    end
    local ctx = runs[run_id]
    if ctx and not pending[run_id][ev[2]] then
      pending[run_id][ev[2]] = true
      ctx.order[#ctx.order + 1] = ev[2]
      ctx.packed[ev[2]], ctx.uuid[ev[2]] = pack_id(ev[2])
    end
  end
  for _, run_id in ipairs(order) do load_rows(runs[run_id], runs[run_id].order) end
  for _, ev in ipairs(events) do
    local ctx = runs[ev[1]]
    if ctx then apply_one(ctx, ev) end
  end
  for _, run_id in ipairs(order) do write_run(runs[run_id], settle, updated_at) end
  local result = {}
  for _, run_id in ipairs(missing) do result[#result + 1] = run_id end
  return result
end

-- Every task a worker node holds becomes LOST with ``reason``; its in-flight index goes.
local function lose_tasks_of(worker, reason)
  local nkey = node_key(worker)
  local events = {}
  for _, member in ipairs(redis.call('SMEMBERS', nkey)) do
    local tab = string.find(member, '\t', 1, true)
    if tab then
      events[#events + 1] = {string.sub(member, 1, tab - 1), string.sub(member, tab + 1), 'lost',
        cjson.null, cjson.null, cjson.null, now_micros(), reason}
    end
  end
  redis.call('DEL', nkey)
  if #events > 0 then apply_events(events, 0, fmt(now_micros())) end
end

-- What a worker's death or shutdown changes: its tasks are lost, and the runs waiting on its
-- queues may have no live consumer left.
local function worker_gone(pw_id, reason)
  local pkey = key('pw', pw_id)
  local name = jget(pkey, 'name', nil)
  if name then lose_tasks_of(name, reason) end
  local lw = jget(pkey, 'logical_worker_id', nil)
  if lw then refresh_queue_runs(jget(key('lw', lw), 'queues', {})) end
end
