--@uses status ledger
-- Logical workers (a name and its queues) and physical workers (one process each, with a
-- heartbeat and liveness).

--@@ create_logical_worker
-- ARGV: id, name, queue count n, n queues, field pairs... -> 1 created | 0 existed
local wkey = key('lw', ARGV[1])
if redis.call('EXISTS', wkey) == 1 then return 0 end
local nq = tonumber(ARGV[3])
for i = 4, 3 + nq do redis.call('SADD', key('lw', 'queue', ARGV[i]), ARGV[1]) end
redis.call('SADD', key('lw', 'name', ARGV[2]), ARGV[1])
redis.call('SADD', key('lw', 'ids'), ARGV[1])
hset_pairs(wkey, ARGV, 4 + nq, true)
return 1

--@@ attach_worker_to_runs
-- ARGV: logical worker id -> ids of the active runs it was newly attached to
local lw = ARGV[1]
if redis.call('EXISTS', key('lw', lw)) == 0 then return {} end
local attached = {}
local queues = jget(key('lw', lw), 'queues', {})
for _, q in ipairs(queues) do
  -- SINTER walks the smaller set, so the cost follows the active runs, not the whole history.
  for status, _ in pairs(ACTIVE_STATUS) do
    for _, run_id in ipairs(redis.call('SINTER', key('run', 'status', status), key('run', 'queue', q))) do
      redis.call('SADD', key('lw', lw, 'runs'), run_id)
      if list_add(key('run', run_id), 'workers', lw) == 1 then attached[#attached + 1] = run_id end
    end
  end
end
-- A run that waited with no live consumer has one now.
refresh_queue_runs(queues)
return attached

--@@ delete_logical_workers
-- ARGV: ids... -> number deleted
local n = 0
for i = 1, #ARGV do
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

--@@ upsert_physical_worker
-- ARGV: name digest, new id, pid json or '', logical worker id or '',
--       n1, n1 pairs set always, n2, n2 pairs set when created or restarted, pairs set on create
-- A different pid on a worker that had started before is a restart: restart_count + 1.
-- -> {1, id} created | {2, id} restarted | {0, id} updated | {-1} id clash | {-3} lw missing
local existing = redis.call('HGET', key('pw', 'name'), ARGV[1])
local pid, lw = ARGV[3], ARGV[4]
if lw ~= '' and redis.call('EXISTS', key('lw', lw)) == 0 then return {-3} end
local always_first = 6
local start_count_at = always_first + 2 * tonumber(ARGV[5])
local start_first = start_count_at + 1
local create_first = start_first + 2 * tonumber(ARGV[start_count_at])
local id, outcome
if not existing then
  id = ARGV[2]
  if redis.call('EXISTS', key('pw', id)) == 1 then return {-1} end
  redis.call('HSET', key('pw', 'name'), ARGV[1], id)
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
local old_job = jget(pkey, 'job_id', nil)
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
local new_job = jget(pkey, 'job_id', nil)
if old_job ~= new_job then
  if old_job then redis.call('SREM', key('pw', 'job', old_job), id) end
  if new_job then redis.call('SADD', key('pw', 'job', new_job), id) end
end
if lw ~= '' then hset_full(pkey, 'logical_worker_id', cjson.encode(lw)) end
local new_lw = jget(pkey, 'logical_worker_id', nil)
if old_lw ~= new_lw then
  if old_lw then redis.call('SREM', key('lw', old_lw, 'physical'), id) end
  if new_lw then redis.call('SADD', key('lw', new_lw, 'physical'), id) end
end
refresh_liveness(id)
return {outcome, id}

--@@ stop_worker
-- ARGV: physical worker id, heartbeat_timestamp json -> 1 | 0 when the worker is missing
-- STOPPED with its pid cleared; tasks it still held become LOST; the runs on its queues may
-- have lost their last live consumer.
local pw = ARGV[1]
local pkey = key('pw', pw)
if redis.call('EXISTS', pkey) == 0 then return 0 end
local old = jget(pkey, 'status', 'RUNNING')
if old ~= 'STOPPED' then
  redis.call('SREM', key('pw', 'status', old), pw)
  redis.call('SADD', key('pw', 'status', 'STOPPED'), pw)
  redis.call('HSET', pkey, 'status', cjson.encode('STOPPED'))
end
hdel_full(pkey, 'pid')
redis.call('HSET', pkey, 'heartbeat_timestamp', ARGV[2])
refresh_liveness(pw)
worker_gone(pw, 'worker ' .. jget(pkey, 'name', pw) .. ' shut down with the task unfinished')
return 1

--@@ refresh_runs_on_queues
-- ARGV: queues... -> number of runs judged again
refresh_queue_runs(ARGV)
return 0

--@@ delete_physical_workers
-- ARGV: ids... -> number deleted
local n = 0
for i = 1, #ARGV do
  local id = ARGV[i]
  local pkey = key('pw', id)
  if redis.call('EXISTS', pkey) == 1 then
    local lw = jget(pkey, 'logical_worker_id', nil)
    if lw then redis.call('SREM', key('lw', lw, 'physical'), id) end
    local host = jget(pkey, 'host', nil)
    if host then redis.call('SREM', key('pw', 'host', host), id) end
    local job = jget(pkey, 'job_id', nil)
    if job then redis.call('SREM', key('pw', 'job', job), id) end
    redis.call('SREM', key('pw', 'status', jget(pkey, 'status', 'RUNNING')), id)
    local nd = digest(jget(pkey, 'name', ''))
    if redis.call('HGET', key('pw', 'name'), nd) == id then redis.call('HDEL', key('pw', 'name'), nd) end
    redis.call('SREM', key('pw', 'ids'), id)
    redis.call('DEL', pkey, key('pw', id, 'alive'))
    n = n + 1
  end
end
return n
