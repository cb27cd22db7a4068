-- Plain field updates of runs and physical workers, keeping their indexes in step.

local function pairs_to_map(flat, first)
  local map = {}
  for i = first, #flat, 2 do map[flat[i]] = flat[i + 1] end
  return map
end

--@@ update_fields
-- ARGV: entity ('run'|'pw'), id, then pairs (field, json; '' deletes) to set
-- -> 1 updated | -1 not found | -2 new logical worker missing
local entity, id = ARGV[1], ARGV[2]
local rkey = key(entity, id)
if redis.call('EXISTS', rkey) == 0 then return -1 end
local changes = pairs_to_map(ARGV, 3)
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
-- Physical worker fields with an index set: field -> the set's key segment.
for field, segment in pairs({host = 'host', job_id = 'job'}) do
  if entity == 'pw' and changes[field] then
    local old = jget(rkey, field, nil)
    if old then redis.call('SREM', key('pw', segment, old), id) end
    if changes[field] ~= '' and changes[field] ~= 'null' then
      redis.call('SADD', key('pw', segment, cjson.decode(changes[field])), id)
    end
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
hset_pairs(rkey, ARGV, 3)
if entity == 'pw' then refresh_liveness(id) end
return 1
