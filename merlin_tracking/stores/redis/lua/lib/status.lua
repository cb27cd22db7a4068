-- Run status: the Lua twin of ``next_status`` in stores/rules.py (keep the two alike; the
-- property test tests/stores/test_stores_agree.py compares them), with the end time, the
-- settle mark and the retention of the task ledger that follow from it.

-- Whether a live worker consumes ``queue`` ('' is an unknown queue: counted as covered).
local COVERED = {}
local function covered(queue)
  if queue == '' then return true end
  if COVERED[queue] == nil then
    COVERED[queue] = false
    for _, lw in ipairs(redis.call('SMEMBERS', key('lw', 'queue', queue))) do
      for _, pw in ipairs(redis.call('SMEMBERS', key('lw', lw, 'physical'))) do
        local pkey = key('pw', pw)
        if jget(pkey, 'status', 'RUNNING') == 'RUNNING' and (jget(pkey, 'stale_after', nil) == nil
            or redis.call('EXISTS', key('pw', pw, 'alive')) == 1) then
          COVERED[queue] = true
          break
        end
      end
      if COVERED[queue] then break end
    end
  end
  return COVERED[queue]
end

local function any_waiting_covered(run_id)
  local waiting = redis.call('HGETALL', key('run', run_id, 'waiting'))
  for i = 1, #waiting, 2 do
    if tonumber(waiting[i + 1]) > 0 and covered(waiting[i]) then return true end
  end
  return false
end

local function number(rkey, field)
  local raw = redis.call('HGET', rkey, field)
  if not raw or raw == 'null' then return nil end
  return tonumber(raw)
end

-- A wave-1 run (record version 1) kept no in-flight or waiting counts: work them out of its
-- task records once (started tasks in flight on an unknown worker, queued and retrying ones
-- waiting on an unknown queue), then mark the run version 2, whose fields are a superset.
local function upgrade_wave_1(rkey, run_id)
  if redis.call('HGET', rkey, 'v') ~= '1' then return end
  local flat = redis.call('HGETALL', key('run', run_id, 'tasks'))
  local inflight, waiting = 0, 0
  for i = 2, #flat, 2 do
    local letter = string.sub(flat[i], 1, 1)
    if letter == 's' or letter == 'c' then inflight = inflight + 1 end
    if letter == 'q' or letter == 'r' then waiting = waiting + 1 end
  end
  if inflight > 0 then redis.call('HINCRBY', rkey, '_inflight', inflight) end
  if waiting > 0 then redis.call('HINCRBY', key('run', run_id, 'waiting'), '', waiting) end
  redis.call('HSET', rkey, 'v', '2')
end

local function judge(rkey, run_id, old)
  local function n(field) return number(rkey, field) or 0 end
  local queued = n('tasks_queued')
  local finished = n('tasks_succeeded') + n('tasks_revoked')
  local reopened = old == 'COMPLETED' and finished < queued
  if not ACTIVE_STATUS[old] and not reopened then return old end
  if n('tasks_failed') > 0 then return 'FAILED' end
  local publishing = n('publishing')
  if queued > 0 and publishing <= 0 and finished >= queued then
    local until_ = number(rkey, 'settle_until')
    if not until_ or until_ <= now_micros() then return 'COMPLETED' end
  elseif queued - finished > 0 and publishing <= 0 and n('_inflight') <= 0
      and not any_waiting_covered(run_id) then
    return 'STALLED'
  end
  if n('tasks_started') > 0 then return 'RUNNING' end
  if queued > 0 then return 'QUEUED' end
  return old
end

-- A COMPLETED run keeps its task ledger ``task_retention`` seconds (0: dropped now, counters
-- kept); leaving COMPLETED (new tasks joined it) keeps it for good again.
local function apply_retention(rkey, run_id, completed)
  local keys = ledger_keys(run_id)
  if not completed then
    for _, k in ipairs(keys) do redis.call('PERSIST', k) end
    return
  end
  local retention = number(rkey, 'task_retention')
  if retention == nil then return end
  if retention <= 0 then
    unindex_run_tasks(run_id)
    redis.call('DEL', unpack(keys))
  else
    for _, k in ipairs(keys) do redis.call('PEXPIRE', k, math.max(1, math.floor(retention * 1000))) end
  end
end

-- Judge the run's status again (or set ``forced``, a status given by hand) and store what
-- follows from it; returns the new status.
local function refresh_run_status(run_id, forced)
  local rkey = key('run', run_id)
  local old = jget(rkey, 'status', 'INITIALIZED')
  upgrade_wave_1(rkey, run_id)
  local new = forced or judge(rkey, run_id, old)
  local active = ACTIVE_STATUS[new]
  local until_ = number(rkey, 'settle_until')
  if until_ and (not active or until_ <= now_micros()) then
    redis.call('HDEL', rkey, 'settle_until')
    redis.call('ZREM', key('run', 'settle'), run_id)
  elseif until_ then
    redis.call('ZADD', key('run', 'settle'), fmt(until_), run_id)
  end
  if new ~= old then
    redis.call('SREM', key('run', 'status', old), run_id)
    redis.call('SADD', key('run', 'status', new), run_id)
    redis.call('HSET', rkey, 'status', cjson.encode(new))
  end
  if active then
    redis.call('HDEL', rkey, 'finished_at')
  else
    local last = number(rkey, '_last_finish')
    local fin = number(rkey, 'finished_at')
    if ACTIVE_STATUS[old] then
      fin = (new ~= 'CANCELLED' and last) or now_micros()
    elseif last and (not fin or last > fin) then
      fin = last
    end
    if fin then redis.call('HSET', rkey, 'finished_at', fmt(fin)) end
  end
  if (new == 'COMPLETED') ~= (old == 'COMPLETED') then
    apply_retention(rkey, run_id, new == 'COMPLETED')
  end
  return new
end

-- Judge again the active runs that use one of ``queues`` (their consumers changed).
local function refresh_queue_runs(queues)
  local seen = {}
  for _, q in ipairs(queues) do
    for status, _ in pairs(ACTIVE_STATUS) do
      for _, run_id in ipairs(redis.call('SINTER', key('run', 'status', status), key('run', 'queue', q))) do
        if not seen[run_id] then
          seen[run_id] = true
          refresh_run_status(run_id, nil)
        end
      end
    end
  end
end
