-- The task ledger: the Lua twin of ``apply_event`` in stores/rules.py (keep the two alike; the
-- property test tests/stores/test_stores_agree.py compares them). Uses lib/status.lua.
--
-- {P}:run:<n>:tasks   task id -> record: state letter, then comma-separated base-36 fields
--                     attempts (glued to the letter), name#, queue#, worker#, queued, started,
--                     finished: #s index {P}:run:<n>:dict, times are milliseconds since the
--                     run's creation; trailing empty fields are left out (a wave-1 record is
--                     just its letter)
-- {P}:run:<n>:dict    'n'|'q'|'w' .. text -> index, '#' .. index -> kind .. text, '#' -> last
-- {P}:run:<n>:errors  task id -> failure or reason lost
-- {P}:run:<n>:waiting queue ('' unknown) -> tasks of the run queued or retrying there
-- {P}:run:<n>:msgs    task id -> the message a worker received (tracking_keep_messages), until
--                     the task finishes
-- {P}:node:<digest>:inflight  "<run>\t<task>" of the tasks a worker node holds (c, s)
-- The run hash keeps _inflight (its tasks in c or s) and _last_finish (microseconds).

local UNFINISHED = {q = true, c = true, s = true, r = true, L = true}
local IN_FLIGHT = {c = true, s = true}
local WAITING = {q = true, r = true}
local FINAL_LETTER = {succeeded = 'S', failed = 'F', revoked = 'R'}
local FINAL_COUNTER = {S = 'tasks_succeeded', F = 'tasks_failed', R = 'tasks_revoked'}
local IMPLY_START = {retried = true, succeeded = true, failed = true}
local JOINS_QUEUE = {published = true, received = true, retried = true}
local B36 = '0123456789abcdefghijklmnopqrstuvwxyz'

local function b36(n)
  if n == 0 then return '0' end
  local sign = ''
  if n < 0 then sign, n = '-', -n end
  local out = {}
  while n > 0 do
    local d = n % 36
    out[#out + 1] = string.sub(B36, d + 1, d + 1)
    n = (n - d) / 36
  end
  return sign .. string.reverse(table.concat(out))
end

local function unb36(s)
  if s == nil or s == '' then return nil end
  if string.sub(s, 1, 1) == '-' then return -tonumber(string.sub(s, 2), 36) end
  return tonumber(s, 36)
end

local function node_key(worker)
  return key('node', string.sub(redis.sha1hex(worker), 1, 24), 'inflight')
end

local function opt(v)
  if v == nil or v == cjson.null or v == '' then return nil end
  return v
end

-- One run's context while a batch is applied: its dictionary, rows and changes.
local function open_run(run_id)
  local rkey = key('run', run_id)
  upgrade_wave_1(rkey, run_id)  -- before its records are read and their counts changed
  local ctx = {id = run_id, rkey = rkey, rows = {}, stored = {}, order = {}, counts = {},
    dict = {}, rdict = {}, errors = {}, msgs = {}, queues = {}, started_at = nil, last_finish = nil,
    settle = false, ends = false}
  ctx.created_ms = math.floor((tonumber(redis.call('HGET', rkey, 'created_at')) or 0) / 1000)
  local flat = redis.call('HGETALL', key('run', run_id, 'dict'))
  for i = 1, #flat, 2 do
    local f = flat[i]
    if string.sub(f, 1, 1) == '#' and #f > 1 then
      ctx.rdict[f] = string.sub(flat[i + 1], 2)
    elseif string.sub(f, 1, 1) ~= '#' then
      ctx.dict[f] = flat[i + 1]
    end
  end
  return ctx
end

local function decode(ctx, raw)
  local letter = string.sub(raw, 1, 1)
  local parts, pos = {}, 2
  while true do
    local comma = string.find(raw, ',', pos, true)
    if not comma then parts[#parts + 1] = string.sub(raw, pos); break end
    parts[#parts + 1] = string.sub(raw, pos, comma - 1)
    pos = comma + 1
  end
  local function text(i)
    local idx = opt(parts[i])
    return idx and ctx.rdict['#' .. idx] or nil
  end
  local function time(i)
    local rel = unb36(opt(parts[i]))
    return rel and (ctx.created_ms + rel) * 1000 or nil
  end
  local attempts = unb36(opt(parts[1])) or 0
  -- Only a wave-1 record (its letter alone) can be started, retrying or finished by running
  -- with no attempt written: it ran once.
  if attempts == 0 and (letter == 's' or letter == 'r' or letter == 'S' or letter == 'F') then
    attempts = 1
  end
  return {state = letter, attempts = attempts, name = text(2), queue = text(3),
    worker = text(4), q = time(5), s = time(6), f = time(7)}
end

local function index_of(ctx, kind, value)
  if value == nil then return '' end
  local f = kind .. value
  local idx = ctx.dict[f]
  if not idx then
    idx = b36(redis.call('HINCRBY', key('run', ctx.id, 'dict'), '#', 1))
    redis.call('HSET', key('run', ctx.id, 'dict'), f, idx, '#' .. idx, f)
    ctx.dict[f] = idx
    ctx.rdict['#' .. idx] = value
  end
  return idx
end

local function encode(ctx, row)
  local function time(t)
    if t == nil then return '' end
    return b36(math.floor(t / 1000) - ctx.created_ms)
  end
  local fields = {row.attempts > 0 and b36(row.attempts) or '', index_of(ctx, 'n', row.name),
    index_of(ctx, 'q', row.queue), index_of(ctx, 'w', row.worker), time(row.q), time(row.s),
    time(row.f)}
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
    local slice = {unpack(tasks, first, math.min(first + 999, #tasks))}
    local values = redis.call('HMGET', key('run', ctx.id, 'tasks'), unpack(slice))
    for i, task in ipairs(slice) do
      if values[i] then
        local row = decode(ctx, values[i])
        ctx.rows[task] = row
        ctx.stored[task] = {state = row.state, queue = row.queue, worker = row.worker, raw = values[i]}
      end
    end
  end
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
  for _, task in ipairs(ctx.order) do
    local row, before = ctx.rows[task], ctx.stored[task] or {}
    local raw = encode(ctx, row)
    if raw ~= before.raw then
      fields[#fields + 1] = task
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
  for task, err in pairs(ctx.errors) do
    if err then
      redis.call('HSET', key('run', ctx.id, 'errors'), task, err)
    else
      redis.call('HDEL', key('run', ctx.id, 'errors'), task)
    end
  end
  -- A kept message (tracking_keep_messages) stays until its task finishes.
  for _, task in ipairs(ctx.order) do
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

-- Apply events (wire form) in order; returns the run ids that were missing (events dropped).
local function apply_events(events, settle, updated_at)
  local runs, order, missing = {}, {}, {}
  local pending = {}
  for _, ev in ipairs(events) do
    local run_id = ev[1]
    if runs[run_id] == nil and not missing[run_id] then
      if redis.call('EXISTS', key('run', run_id)) == 1 then
        runs[run_id] = open_run(run_id)
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
