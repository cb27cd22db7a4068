--@uses status ledger
-- Run progress: task events and launches in progress, which move counters and status, and
-- catch_up, which applies what time alone made due (settle times passed, workers gone stale).

-- Microseconds since the epoch as Python's ``datetime.isoformat(timespec="seconds")`` writes a
-- UTC time ("2024-05-01T12:00:00+00:00"): the civil date of a day number, by Hinnant's method.
local function iso_seconds(micros)
  local secs = math.floor(micros / 1000000)
  local days = math.floor(secs / 86400)
  local rest = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d+00:00', year, month, day,
    math.floor(rest / 3600), math.floor(rest % 3600 / 60), rest % 60)
end

-- Why a stale worker's tasks are lost (the twin of sqlite/liveness.stalled_reason): its
-- allocation ended when that end has passed and lies within stale_after of its last beat.
local function stale_reason(pkey, pw, beat)
  local reason = 'worker ' .. jget(pkey, 'name', pw) .. ' stopped heartbeating at '
    .. iso_seconds(beat)
  local ends = tonumber(redis.call('HGET', pkey, 'job_ends_at') or '')
  local window = (tonumber(redis.call('HGET', pkey, 'stale_after') or '') or 0) * 1000000
  if ends and ends <= now_micros() and math.abs(ends - beat) <= window then
    reason = 'allocation ' .. jget(pkey, 'job_id', '?') .. ' (' .. jget(pkey, 'scheduler', '?')
      .. ') ended at ' .. iso_seconds(ends) .. '; ' .. reason
  end
  return reason
end

--@@ task_events
-- ARGV: JSON list of events in wire form (TaskEvent.to_json, run id as its number),
--       updated_at json, settle microseconds (optional),
--       JSON {run id: workspace as stored} the sender knows (optional)
-- -> list of run ids that were missing (their events were dropped)
local known = ARGV[4] and cjson.decode(ARGV[4]) or nil
return apply_events(cjson.decode(ARGV[1]), tonumber(ARGV[3] or '0') or 0, ARGV[2], known)

--@@ change_publishing
-- ARGV: run id, delta, updated_at json -> new status, or '' if the run is missing
local rkey = key('run', ARGV[1])
if redis.call('EXISTS', rkey) == 0 then return '' end
local left = redis.call('HINCRBY', rkey, 'publishing', tonumber(ARGV[2]))
if left <= 0 then redis.call('HDEL', rkey, 'publishing') end
redis.call('HSET', rkey, 'updated_at', ARGV[3])
return refresh_run_status(ARGV[1], nil)

--@@ catch_up
-- ARGV: updated_at json -> {ids of runs that completed, ids of workers found stale}
-- Workers whose liveness deadline ({P}:pw:alive_until) passed with their alive key gone are
-- stored STALLED and the tasks they held become LOST; runs whose settle time ({P}:run:settle)
-- passed are judged again. Cheap when nothing is due: two range reads.
local now = fmt(now_micros())
-- Wave 1 kept settling runs in a plain set: move them to the sorted set once.
if redis.call('EXISTS', key('run', 'settling')) == 1 then
  for _, run_id in ipairs(redis.call('SMEMBERS', key('run', 'settling'))) do
    local until_ = redis.call('HGET', key('run', run_id), 'settle_until')
    if until_ then redis.call('ZADD', key('run', 'settle'), until_, run_id) end
  end
  redis.call('DEL', key('run', 'settling'))
end
local stalled = {}
for _, pw in ipairs(redis.call('ZRANGEBYSCORE', key('pw', 'alive_until'), '-inf', now)) do
  redis.call('ZREM', key('pw', 'alive_until'), pw)
  local pkey = key('pw', pw)
  if redis.call('EXISTS', key('pw', pw, 'alive')) == 0 and redis.call('EXISTS', pkey) == 1
      and jget(pkey, 'status', 'RUNNING') == 'RUNNING' then
    redis.call('SREM', key('pw', 'status', 'RUNNING'), pw)
    redis.call('SADD', key('pw', 'status', 'STALLED'), pw)
    redis.call('HSET', pkey, 'status', cjson.encode('STALLED'))
    local beat = tonumber(redis.call('HGET', pkey, 'heartbeat_timestamp') or '')
      or tonumber(redis.call('HGET', pkey, 'created_at') or '') or now_micros()
    worker_gone(pw, stale_reason(pkey, pw, beat))
    stalled[#stalled + 1] = pw
  end
end
local completed = {}
for _, run_id in ipairs(redis.call('ZRANGEBYSCORE', key('run', 'settle'), '-inf', now)) do
  local rkey = key('run', run_id)
  if redis.call('EXISTS', rkey) == 0 then
    redis.call('ZREM', key('run', 'settle'), run_id)
  else
    local old = jget(rkey, 'status', 'INITIALIZED')
    local new = refresh_run_status(run_id, nil)
    redis.call('ZREM', key('run', 'settle'), run_id)
    if new ~= old then
      redis.call('HSET', rkey, 'updated_at', ARGV[1])
      if new == 'COMPLETED' then completed[#completed + 1] = run_id end
    end
  end
end
return {completed, stalled}

--@@ index_ledgers
-- ARGV: run ids -> how many ledgers got the row index (written before it existed)
local upgraded = 0
for _, run_id in ipairs(ARGV) do
  if redis.call('EXISTS', key('run', run_id)) == 1
      and redis.call('EXISTS', key('run', run_id, 'rows')) == 0
      and redis.call('EXISTS', key('run', run_id, 'tasks')) == 1 then
    open_ledger(run_id)
    upgraded = upgraded + 1
  end
end
return upgraded

--@@ delete_task
-- ARGV: run id, task id -> 1 deleted | 0 no such record
local run_id, task = ARGV[1], ARGV[2]
if redis.call('EXISTS', key('run', run_id)) == 0 then return 0 end
local ctx = open_ledger(run_id)
local field = pack_id(task)
local raw = redis.call('HGET', key('run', run_id, 'tasks'), field)
if not raw then return 0 end
local row = decode(ctx, raw)
if WAITING[row.state] then
  local q = row.queue or ''
  if redis.call('HINCRBY', key('run', run_id, 'waiting'), q, -1) <= 0 then
    redis.call('HDEL', key('run', run_id, 'waiting'), q)
  end
end
if IN_FLIGHT[row.state] then
  redis.call('HINCRBY', key('run', run_id), '_inflight', -1)
  if row.worker then redis.call('SREM', node_key(row.worker), run_id .. '\t' .. task) end
end
if row.row then
  redis.call('SETRANGE', key('run', run_id, 'rows'), row.row * ROW + 16, '-')
  redis.call('HDEL', key('run', run_id, 'xids'), fmt(row.row))
end
count_letter(ctx, row.state, nil)
write_letters(ctx)
redis.call('HDEL', key('run', run_id, 'tasks'), field)
redis.call('HDEL', key('run', run_id, 'errors'), task)
redis.call('HDEL', key('run', run_id, 'msgs'), task)
return 1

--@@ take_message
-- ARGV: run id, task id -> the kept message of a LOST task, removed (so that one requeue
-- publishes it), or false when the task is not lost or has no kept message
local raw = redis.call('HGET', key('run', ARGV[1], 'tasks'), (pack_id(ARGV[2])))
  or redis.call('HGET', key('run', ARGV[1], 'tasks'), ARGV[2])  -- a ledger not upgraded yet
if not raw or string.sub(raw, 1, 1) ~= 'L' then return false end
local message = redis.call('HGET', key('run', ARGV[1], 'msgs'), ARGV[2])
if not message then return false end
redis.call('HDEL', key('run', ARGV[1], 'msgs'), ARGV[2])
return message

--@@ keep_message
-- ARGV: run id, task id, message -> 1 kept | 0 the run is gone (a requeue that could not
-- publish puts the message back)
if redis.call('EXISTS', key('run', ARGV[1])) == 0 then return 0 end
redis.call('HSET', key('run', ARGV[1], 'msgs'), ARGV[2], ARGV[3])
return 1
