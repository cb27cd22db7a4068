-- Studies: created once per name; deleted with their runs or leaving them without a study.

--@@ create_study
-- ARGV: name digest, id, field pairs... -> {1, id} created, {0, existing id}, {-1} id clash
local existing = redis.call('HGET', key('study', 'name'), ARGV[1])
if existing then return {0, existing} end
local skey = key('study', ARGV[2])
if redis.call('EXISTS', skey) == 1 then return {-1} end
redis.call('HSET', key('study', 'name'), ARGV[1], ARGV[2])
redis.call('SADD', key('study', 'ids'), ARGV[2])
hset_pairs(skey, ARGV, 3, true)
return {1, ARGV[2]}

--@@ delete_study
-- ARGV: study id, remove runs (1|0), max runs to handle now
-- -> {1} deleted | {2, runs left} call again | {0} not found
local sid = ARGV[1]
local skey = key('study', sid)
if redis.call('EXISTS', skey) == 0 then return {0} end
local runs_key = key('study', sid, 'runs')
local batch = redis.call('SRANDMEMBER', runs_key, tonumber(ARGV[3]))
for _, run_id in ipairs(batch) do
  if ARGV[2] == '1' then
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
