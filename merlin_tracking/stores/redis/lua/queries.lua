-- Reads done server-side so that each is one round trip: a record by id or unique field, and the
-- ids matching filters that one SUNION or SINTER cannot answer.

--@@ fetch
-- ARGV: entity, id or '', unique index name or '', value digest or '', relation suffixes...
-- Resolves an id first, then the unique index; returns {id, n, n field/value items, then for
-- each relation: count, members...} or {} when nothing matches. One round trip either way.
local entity = ARGV[1]
local id = nil
if ARGV[2] ~= '' and redis.call('EXISTS', key(entity, ARGV[2])) == 1 then id = ARGV[2] end
if not id and ARGV[3] ~= '' then
  id = redis.call('HGET', key(entity, ARGV[3]), ARGV[4])
  if not id then return {} end
end
if not id then return {} end
local flat = redis.call('HGETALL', key(entity, id))
local out = {id, #flat}
for _, v in ipairs(flat) do out[#out + 1] = v end
for i = 5, #ARGV do
  local members = redis.call('SMEMBERS', key(entity, id, ARGV[i]))
  out[#out + 1] = #members
  for _, m in ipairs(members) do out[#out + 1] = m end
end
if entity == 'pw' then out[#out + 1] = redis.call('EXISTS', key('pw', id, 'alive')) end
return out

--@@ find_ids
-- ARGV: JSON list of groups; a group is a list of set keys (their union) or {"ids": [...]}.
-- Returns the ids in every group (intersection of unions), reading the smallest group first.
local groups = cjson.decode(ARGV[1])
local function group_size(g)
  if g['ids'] then return #g['ids'] end
  local n = 0
  for _, k in ipairs(g) do n = n + redis.call('SCARD', k) end
  return n
end
local function group_has(g, member)
  if g['ids'] then
    for _, v in ipairs(g['ids']) do if v == member then return true end end
    return false
  end
  for _, k in ipairs(g) do
    if redis.call('SISMEMBER', k, member) == 1 then return true end
  end
  return false
end
local best, best_size = 1, nil
for i, g in ipairs(groups) do
  local size = group_size(g)
  if best_size == nil or size < best_size then best, best_size = i, size end
end
local base = groups[best]
local candidates
if base['ids'] then
  candidates = base['ids']
elseif #base == 0 then
  candidates = {}
else
  candidates = redis.call('SUNION', unpack(base))
end
local result = {}
for _, member in ipairs(candidates) do
  local keep = true
  for i, g in ipairs(groups) do
    if i ~= best and not group_has(g, member) then keep = false; break end
  end
  if keep then result[#result + 1] = member end
end
return result
