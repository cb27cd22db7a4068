-- Run progress: task events, launches in progress and settling, all of which may move the
-- status. Only these scripts read the clock or derive a status from the counters.

-- The Redis server's clock in microseconds (the unit of stored datetimes), read once per call.
local NOW
local function now_micros()
  if not NOW then
    local t = redis.call('TIME')
    NOW = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return NOW
end

-- A run whose tasks were received at a worker (untracked publisher) records ``settle_until``:
-- it may complete only once that has passed with no new receipt. Until then it waits in
-- {P}:run:settling, which the ``settle_runs`` script (worker heartbeats, the CLI) works off.
local function settled(rkey)
  local raw = redis.call('HGET', rkey, 'settle_until')
  return not raw or tonumber(raw) <= now_micros()
end

-- Status follows the counters: QUEUED on publish, RUNNING on start, FAILED on a failure,
-- COMPLETED when every counted task finished, none failed, no launch is still publishing and
-- the run has settled. FAILED and CANCELLED are never left; COMPLETED only to take in new tasks.
local function refresh_run_status(run_id, seen)
  local rkey = key('run', run_id)
  local old = jget(rkey, 'status', 'INITIALIZED')
  local function n(field) return tonumber(redis.call('HGET', rkey, field) or '0') end
  -- A COMPLETED run reopens when new tasks join it (more work launched into its workspace, or
  -- tasks first seen at a worker when the publisher is not tracked); FAILED and CANCELLED stay.
  local reopened = old == 'COMPLETED'
    and n('tasks_succeeded') + n('tasks_revoked') < n('tasks_queued')
  if not ACTIVE_STATUS[old] and not reopened then return old end
  local done = n('tasks_queued') > 0 and n('publishing') <= 0
    and n('tasks_succeeded') + n('tasks_revoked') >= n('tasks_queued')
  if done and not settled(rkey) then
    redis.call('SADD', key('run', 'settling'), run_id)
    done = false
  end
  local new = old
  if n('tasks_failed') > 0 then
    new = 'FAILED'
  elseif done then
    new = 'COMPLETED'
  elseif seen['started'] or n('tasks_started') > 0 then
    new = 'RUNNING'
  elseif (seen['published'] or n('tasks_queued') > 0) and old == 'INITIALIZED' then
    new = 'QUEUED'
  end
  if new ~= old then
    redis.call('SREM', key('run', 'status', old), run_id)
    redis.call('SADD', key('run', 'status', new), run_id)
    redis.call('HSET', rkey, 'status', cjson.encode(new))
  end
  return new
end

--@@ task_events
-- ARGV: JSON list of events [run number, task id, kind, queue (published only)],
--       updated_at json, settle microseconds (optional).
-- kind: published | received | started | retried | succeeded | failed | revoked | ran (started,
-- then succeeded). received: queued, first seen at a worker; the run's settle_until becomes
-- now + settle. Events of one process arrive in order; events of different processes may
-- interleave, so every kind is accepted in any state and each task id counts once per counter.
-- Per-task states live in {P}:run:<id>:tasks:
-- q queued, r requeued after a start (retry), s started, S/F/R succeeded/failed/revoked.
-- -> list of run ids that were missing (their events were dropped)
local FINAL = {succeeded = 'S', failed = 'F', revoked = 'R'}
local events = cjson.decode(ARGV[1])
local missing, touched, order = {}, {}, {}
local exists, known_queues, states, stored, seen_tasks, counts = {}, {}, {}, {}, {}, {}
-- First pass: which runs exist, and the stored state of every task of the batch, read with one
-- HMGET per run (in slices under Lua's unpack limit) rather than one HGET per event.
for _, ev in ipairs(events) do
  local run_id, task = ev[1], ev[2]
  if exists[run_id] == nil then
    exists[run_id] = redis.call('EXISTS', key('run', run_id)) == 1
    if exists[run_id] then
      order[#order + 1] = run_id
      touched[run_id], states[run_id], stored[run_id], seen_tasks[run_id] = {}, {}, {}, {}
      counts[run_id] = {}
    elseif not missing[run_id] then
      missing[run_id] = true; missing[#missing + 1] = run_id
    end
  end
  if exists[run_id] and stored[run_id][task] == nil then
    stored[run_id][task] = false
    seen_tasks[run_id][#seen_tasks[run_id] + 1] = task
  end
end
for _, run_id in ipairs(order) do
  local tasks = seen_tasks[run_id]
  for first = 1, #tasks, 1000 do
    local slice = {unpack(tasks, first, math.min(first + 999, #tasks))}
    local values = redis.call('HMGET', key('run', run_id, 'tasks'), unpack(slice))
    for i, task in ipairs(slice) do
      stored[run_id][task] = values[i]  -- false when absent
      states[run_id][task] = values[i]
    end
  end
end
local function bump(run_id, counter)
  counts[run_id][counter] = (counts[run_id][counter] or 0) + 1
end
-- Second pass: the events in order, counting in memory.
for _, ev in ipairs(events) do
  local run_id, task, kind, queue = ev[1], ev[2], ev[3], ev[4]
  if exists[run_id] then
    local rkey = key('run', run_id)
    local state = states[run_id][task]
    if not state then
      bump(run_id, 'tasks_queued')
      state = 'q'
    end
    if kind == 'started' or kind == 'ran' then
      if state == 'q' then bump(run_id, 'tasks_started') end
      if state == 'q' or state == 'r' then state = 's' end
      touched[run_id]['started'] = true
      -- 'ran': started and succeeded, coalesced by the sender when both fell in one batch.
      if kind == 'ran' then kind = 'succeeded' end
    end
    if kind == 'received' then
      touched[run_id]['received'] = true
      kind = 'published'
    end
    if kind == 'published' or kind == 'retried' then
      if kind == 'retried' then bump(run_id, 'tasks_retried') end
      if kind == 'retried' and (state == 's' or state == 'r') then state = 'r' end
      -- A batch repeats the same run and queue for many tasks: look the queue up once.
      if queue and not known_queues[run_id .. '\n' .. queue] then
        known_queues[run_id .. '\n' .. queue] = true
        if list_add(rkey, 'queues', queue) == 1 then
          redis.call('SADD', key('run', 'queue', queue), run_id)
          for _, w in ipairs(redis.call('SMEMBERS', key('lw', 'queue', queue))) do
            redis.call('SADD', key('lw', w, 'runs'), run_id)
            list_add(rkey, 'workers', w)
          end
        end
      end
      touched[run_id]['published'] = true
    elseif FINAL[kind] then
      if state == 'q' or state == 'r' or state == 's' then
        if state == 'q' and kind ~= 'revoked' then bump(run_id, 'tasks_started') end
        bump(run_id, 'tasks_' .. kind)
        state = FINAL[kind]
      end
    end
    states[run_id][task] = state
  end
end
-- Write back: one HINCRBY per counter and one HSET (in slices) per run, then the status.
local settle = tonumber(ARGV[3] or '0') or 0
for _, run_id in ipairs(order) do
  for counter, n in pairs(counts[run_id]) do
    redis.call('HINCRBY', key('run', run_id), counter, n)
  end
  local fields = {}
  for _, task in ipairs(seen_tasks[run_id]) do
    if states[run_id][task] ~= stored[run_id][task] then
      fields[#fields + 1] = task
      fields[#fields + 1] = states[run_id][task]
    end
    if #fields >= 1000 then
      redis.call('HSET', key('run', run_id, 'tasks'), unpack(fields))
      fields = {}
    end
  end
  if #fields > 0 then redis.call('HSET', key('run', run_id, 'tasks'), unpack(fields)) end
  if settle > 0 and touched[run_id]['received'] then
    redis.call('HSET', key('run', run_id), 'settle_until', string.format('%.0f', now_micros() + settle))
  end
  refresh_run_status(run_id, touched[run_id])
  redis.call('HSET', key('run', run_id), 'updated_at', ARGV[2])
end
return missing

--@@ change_publishing
-- ARGV: run id, delta, updated_at json -> new status, or '' if the run is missing
local rkey = key('run', ARGV[1])
if redis.call('EXISTS', rkey) == 0 then return '' end
local left = redis.call('HINCRBY', rkey, 'publishing', tonumber(ARGV[2]))
if left <= 0 then redis.call('HDEL', rkey, 'publishing') end
redis.call('HSET', rkey, 'updated_at', ARGV[3])
return refresh_run_status(ARGV[1], {})

--@@ settle_runs
-- ARGV: updated_at json -> ids of the runs that completed
-- Every run waiting in {P}:run:settling whose settle_until has passed leaves the set and gets
-- its status refreshed (COMPLETED if its tasks are all done); missing runs just leave.
local completed = {}
for _, run_id in ipairs(redis.call('SMEMBERS', key('run', 'settling'))) do
  local rkey = key('run', run_id)
  if redis.call('EXISTS', rkey) == 0 then
    redis.call('SREM', key('run', 'settling'), run_id)
  elseif settled(rkey) then
    redis.call('SREM', key('run', 'settling'), run_id)
    local old = jget(rkey, 'status', 'INITIALIZED')
    local new = refresh_run_status(run_id, {})
    if new ~= old then
      redis.call('HSET', rkey, 'updated_at', ARGV[1])
      if new == 'COMPLETED' then completed[#completed + 1] = run_id end
    end
  end
end
return completed
