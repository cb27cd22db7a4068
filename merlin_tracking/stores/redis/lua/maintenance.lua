-- Maintenance: one generic script that applies the fixes garbage collection works out in Python
-- (see maintenance.py), so a repair is still one atomic step.

--@@ repair
-- ARGV: JSON list of [op, key, a, b]: ["srem", set, member], ["list_remove", hash, field,
-- member], ["hset", hash, field, json], ["hdel", hash, field]. Used by garbage collection to
-- drop references to records that no longer exist; every key is under P.
local n = 0
for _, op in ipairs(cjson.decode(ARGV[1])) do
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
