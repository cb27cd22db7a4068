--@uses status
-- Runs: creation in a study, queues, logical workers, status set by hand, deletion.

--@@ create_run
-- ARGV: workspace digest, sequence ('' = allocate), study id ('' = the study below), status,
--       queue count n, n queues, study item count m, m study items (name digest, new id,
--       field pairs...: the study to use by name, created if missing), run field pairs...
-- Runs are numbered by a per-prefix sequence ({P}:run:seq): ids sort by creation and index
-- sets hold small integers, which Redis stores as compact intsets. The study and the run are
-- created together, so a create is one round trip, and a refused run creates no study.
-- -> {1, sequence, study id, attached worker ids...} | {0, existing sequence} | {-1} sequence
--    taken (import) | {-2} study missing | {-3} the new study's id is taken (draw another)
local existing = redis.call('HGET', key('run', 'workspace'), ARGV[1])
if existing then return {0, existing} end
local nq = tonumber(ARGV[5])
local ns = tonumber(ARGV[6 + nq])
local first_field = 7 + nq + ns
local study_id = ARGV[3]
if ns > 0 then
  local at = 7 + nq
  study_id = redis.call('HGET', key('study', 'name'), ARGV[at])
  if not study_id then
    study_id = ARGV[at + 1]
    if redis.call('EXISTS', key('study', study_id)) == 1 then return {-3} end
    if ARGV[2] ~= '' and redis.call('EXISTS', key('run', ARGV[2])) == 1 then return {-1} end
    redis.call('HSET', key('study', 'name'), ARGV[at], study_id)
    redis.call('SADD', key('study', 'ids'), study_id)
    hset_pairs(key('study', study_id), ARGV, at + 2, true, first_field - 1)
  end
elseif redis.call('EXISTS', key('study', study_id)) == 0 then
  return {-2}
end
local seq_key = key('run', 'seq')
local run_id = ARGV[2]
if run_id == '' then
  run_id = tostring(redis.call('INCR', seq_key))
else
  if redis.call('EXISTS', key('run', run_id)) == 1 then return {-1} end
  if tonumber(redis.call('GET', seq_key) or '0') < tonumber(run_id) then
    redis.call('SET', seq_key, run_id)
  end
end
local rkey = key('run', run_id)
local lw_keys = {}
for i = 6, 5 + nq do
  redis.call('SADD', key('run', 'queue', ARGV[i]), run_id)
  lw_keys[#lw_keys + 1] = key('lw', 'queue', ARGV[i])
end
redis.call('HSET', key('run', 'workspace'), ARGV[1], run_id)
hset_pairs(rkey, ARGV, first_field, true)
if ns > 0 then redis.call('HSET', rkey, 'study_id', cjson.encode(study_id)) end
redis.call('SADD', key('study', study_id, 'runs'), run_id)
redis.call('SADD', key('run', 'status', ARGV[4]), run_id)
local workers = {}
if #lw_keys > 0 then workers = redis.call('SUNION', unpack(lw_keys)) end
table.sort(workers)
for _, w in ipairs(workers) do redis.call('SADD', key('lw', w, 'runs'), run_id) end
if #workers > 0 then hset_full(rkey, 'workers', encode_list(workers)) end
redis.call('LPUSH', key('run', 'recent'), run_id)
redis.call('LTRIM', key('run', 'recent'), 0, 49)
-- An imported run that was still settling goes on waiting where catch_up looks.
if ACTIVE_STATUS[ARGV[4]] and redis.call('HEXISTS', rkey, 'settle_until') == 1 then
  redis.call('ZADD', key('run', 'settle'), redis.call('HGET', rkey, 'settle_until'), run_id)
end
local result = {1, run_id, study_id}
for _, w in ipairs(workers) do result[#result + 1] = w end
return result

--@@ add_run_queues
-- ARGV: run id, queues... -> {added count, attached worker ids...} | {-1} run missing
local run_id = ARGV[1]
local rkey = key('run', run_id)
if redis.call('EXISTS', rkey) == 0 then return {-1} end
local added, lw_keys = 0, {}
for i = 2, #ARGV do
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

--@@ link_run_worker
-- ARGV: run id, logical worker id, '1' link | '0' unlink -> 1 changed | 0 unchanged | -1 run
-- missing | -2 worker missing
local rkey, wkey = key('run', ARGV[1]), key('lw', ARGV[2])
if redis.call('EXISTS', rkey) == 0 then return -1 end
if ARGV[3] == '1' then
  if redis.call('EXISTS', wkey) == 0 then return -2 end
  redis.call('SADD', key('lw', ARGV[2], 'runs'), ARGV[1])
  return list_add(rkey, 'workers', ARGV[2])
end
redis.call('SREM', key('lw', ARGV[2], 'runs'), ARGV[1])
return list_remove(rkey, 'workers', ARGV[2])

--@@ set_run_status
-- ARGV: run id, new status, updated_at json, allowed old statuses...
-- -> {1, old} changed | {0, old} refused (old status not allowed) | {-1} missing
local run_id = ARGV[1]
local rkey = key('run', run_id)
if redis.call('EXISTS', rkey) == 0 then return {-1} end
local old = jget(rkey, 'status', 'INITIALIZED')
local allowed = false
for i = 4, #ARGV do if ARGV[i] == old then allowed = true end end
if not allowed then return {0, old} end
refresh_run_status(run_id, ARGV[2])
redis.call('HSET', rkey, 'updated_at', ARGV[3])
return {1, old}

--@@ delete_runs
-- ARGV: run ids... -> number deleted
local n = 0
for i = 1, #ARGV do n = n + delete_run(ARGV[i]) end
return n
