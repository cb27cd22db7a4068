--@uses status
-- Heartbeats: the one script every live worker's beacon calls every interval, so it carries
-- only the prelude and the run-status library (each library costs server time on every call).

--@@ heartbeat
-- ARGV: physical worker id, heartbeat_timestamp json[, milliseconds]
-- -> 1 | 0 when the worker is missing | 2: recorded, and the caller is to catch up now
-- A worker stored STALLED (catch_up found it stale) that beats again is RUNNING again, and the
-- runs on its queues have their consumer back. With milliseconds, the first beat of the prefix
-- in that long answers 2: its beacon then runs catch_up, so 10,000 beacons cost one catch-up
-- per interval, not 10,000, and this script stays small (no ledger library to load).
local pw = ARGV[1]
local pkey = key('pw', pw)
if redis.call('EXISTS', pkey) == 0 then return 0 end
redis.call('HSET', pkey, 'heartbeat_timestamp', ARGV[2])
local revived = jget(pkey, 'status', 'RUNNING') == 'STALLED'
if revived then
  redis.call('SREM', key('pw', 'status', 'STALLED'), pw)
  redis.call('SADD', key('pw', 'status', 'RUNNING'), pw)
  redis.call('HSET', pkey, 'status', cjson.encode('RUNNING'))
end
refresh_liveness(pw)
if revived then
  local lw = jget(pkey, 'logical_worker_id', nil)
  if lw then refresh_queue_runs(jget(key('lw', lw), 'queues', {})) end
end
if ARGV[3] and redis.call('SET', key('catch_up', 'due'), '1', 'NX', 'PX', ARGV[3]) then
  return 2
end
return 1
