-- catch_up_due: apply what time alone made due (workers gone stale, settle times passed).
-- Shared by the catch_up script (readers) and the heartbeat script (beacons), which runs it
-- at most once per interval for the whole prefix.

-- Microseconds since the epoch as Python's ``datetime.isoformat(timespec="seconds")`` writes a
-- UTC time ("2024-05-01T12:00:00+00:00"): the civil date of a day number, by Hinnant's method.
local function iso_seconds(micros)
  local secs = math.floor(micros / 1000000)
  local days = math.floor(secs / 86400)
  local rest = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d+00:00', year, month, day,
    math.floor(rest / 3600), math.floor(rest % 3600 / 60), rest % 60)
end

-- Why a stale worker's tasks are lost (the twin of sqlite/liveness.stalled_reason): its
-- allocation ended when that end has passed and lies within stale_after of its last beat.
local function stale_reason(pkey, pw, beat)
  local reason = 'worker ' .. jget(pkey, 'name', pw) .. ' stopped heartbeating at '
    .. iso_seconds(beat)
  local ends = tonumber(redis.call('HGET', pkey, 'job_ends_at') or '')
  local window = (tonumber(redis.call('HGET', pkey, 'stale_after') or '') or 0) * 1000000
  if ends and ends <= now_micros() and math.abs(ends - beat) <= window then
    reason = 'allocation ' .. jget(pkey, 'job_id', '?') .. ' (' .. jget(pkey, 'scheduler', '?')
      .. ') ended at ' .. iso_seconds(ends) .. '; ' .. reason
  end
  return reason
end


-- ``updated_at``: the JSON time stamp runs whose status changes get. -> completed run ids,
-- ids of workers found stale.
local function catch_up_due(updated_at)
  local now = fmt(now_micros())
  -- Wave 1 kept settling runs in a plain set: move them to the sorted set once.
  if redis.call('EXISTS', key('run', 'settling')) == 1 then
    for _, run_id in ipairs(redis.call('SMEMBERS', key('run', 'settling'))) do
      local until_ = redis.call('HGET', key('run', run_id), 'settle_until')
      if until_ then redis.call('ZADD', key('run', 'settle'), until_, run_id) end
    end
    redis.call('DEL', key('run', 'settling'))
  end
  local stalled = {}
  for _, pw in ipairs(redis.call('ZRANGEBYSCORE', key('pw', 'alive_until'), '-inf', now)) do
    redis.call('ZREM', key('pw', 'alive_until'), pw)
    local pkey = key('pw', pw)
    if redis.call('EXISTS', key('pw', pw, 'alive')) == 0 and redis.call('EXISTS', pkey) == 1
        and jget(pkey, 'status', 'RUNNING') == 'RUNNING' then
      redis.call('SREM', key('pw', 'status', 'RUNNING'), pw)
      redis.call('SADD', key('pw', 'status', 'STALLED'), pw)
      redis.call('HSET', pkey, 'status', cjson.encode('STALLED'))
      local beat = tonumber(redis.call('HGET', pkey, 'heartbeat_timestamp') or '')
        or tonumber(redis.call('HGET', pkey, 'created_at') or '') or now_micros()
      worker_gone(pw, stale_reason(pkey, pw, beat))
      stalled[#stalled + 1] = pw
    end
  end
  local completed = {}
  for _, run_id in ipairs(redis.call('ZRANGEBYSCORE', key('run', 'settle'), '-inf', now)) do
    local rkey = key('run', run_id)
    if redis.call('EXISTS', rkey) == 0 then
      redis.call('ZREM', key('run', 'settle'), run_id)
    else
      local old = jget(rkey, 'status', 'INITIALIZED')
      local new = refresh_run_status(run_id, nil)
      redis.call('ZREM', key('run', 'settle'), run_id)
      if new ~= old then
        redis.call('HSET', rkey, 'updated_at', updated_at)
        if new == 'COMPLETED' then completed[#completed + 1] = run_id end
      end
    end
  end
  return completed, stalled
end
