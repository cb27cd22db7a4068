--@uses status ledger catch_up
-- Run progress: task events and launches in progress, which move counters and status, and
-- catch_up, which applies what time alone made due (settle times passed, workers gone stale).

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
local completed, stalled = catch_up_due(ARGV[1])
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

--@@ migrate_runs
-- ARGV: run ids -> {runs upgraded from record version 1, ledgers given the row index}
-- What readers and writers otherwise do lazily, done now: ``merlin-tracking migrate``.
local upgraded, indexed = 0, 0
for _, run_id in ipairs(ARGV) do
  local rkey = key('run', run_id)
  if redis.call('EXISTS', rkey) == 1 then
    if redis.call('HGET', rkey, 'v') == '1' then
      upgrade_wave_1(rkey, run_id)
      upgraded = upgraded + 1
    end
    if redis.call('EXISTS', key('run', run_id, 'rows')) == 0
        and redis.call('EXISTS', key('run', run_id, 'tasks')) == 1 then
      open_ledger(run_id)
      indexed = indexed + 1
    end
  end
end
return {upgraded, indexed}

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
