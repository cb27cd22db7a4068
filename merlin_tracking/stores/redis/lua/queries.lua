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
-- Returns the ids in every group (intersection of unions). The smallest group gives the
-- candidates; each set of the other groups is probed for all of them at once (SMISMEMBER,
-- in batches that unpack() can take), so the commands run follow the number of sets, not the
-- candidates (a server before 6.2, without SMISMEMBER, is probed one member at a time).
local groups = cjson.decode(ARGV[1])
local BATCH = 4000
local function group_size(g)
  if g['ids'] then return #g['ids'] end
  local n = 0
  for _, k in ipairs(g) do n = n + redis.call('SCARD', k) end
  return n
end
local function probe(k, members, first, last)
  local reply = redis.pcall('SMISMEMBER', k, unpack(members, first, last))
  if type(reply) == 'table' and reply.err == nil then return reply end
  reply = {}
  for i = first, last do reply[#reply + 1] = redis.call('SISMEMBER', k, members[i]) end
  return reply
end
-- Marks, in `keep`, the candidates that are in group g; clears the others.
local function narrow(g, candidates, keep)
  local found = {}
  if g['ids'] then
    local set = {}
    for _, v in ipairs(g['ids']) do set[v] = true end
    for i, m in ipairs(candidates) do if set[m] then found[i] = true end end
  else
    for _, k in ipairs(g) do
      for first = 1, #candidates, BATCH do
        local last = math.min(first + BATCH - 1, #candidates)
        local reply = probe(k, candidates, first, last)
        for j = first, last do
          if reply[j - first + 1] == 1 then found[j] = true end
        end
      end
    end
  end
  for i = 1, #candidates do keep[i] = keep[i] and found[i] or false end
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
local keep = {}
for i = 1, #candidates do keep[i] = true end
for i, g in ipairs(groups) do
  if i ~= best and #candidates > 0 then narrow(g, candidates, keep) end
end
local result = {}
for i, member in ipairs(candidates) do
  if keep[i] then result[#result + 1] = member end
end
return result
