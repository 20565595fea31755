-- The helpers every script shares, prepended to each at load (core/store/scripts.py).
--
-- No key name is written in a script. A key that depends on the call (a record, a
-- worker's owned set, an idempotency key) is one of its KEYS. The fixed ones are
-- core/store/keys.py's names, each written `$` and the name below, filled in at load
-- (core/store/scripts.py), as are the histogram's bounds and the trim's step: passed
-- as KEYS they would cost every call's caller about half a microsecond a word to pack.
local TASK_PREFIX, OWNED_PREFIX = $TASK_PREFIX, $OWNED_PREFIX
local DUE_KEY, EXPIRING_KEY = $DUE_KEY, $EXPIRING_KEY
local HISTORY_STREAM, METRICS_KEY = $HISTORY_STREAM, $METRICS_KEY
local QUEUES_KEY, ORPHANS_KEY, WORKER_TASKS_KEY = $QUEUES_KEY, $ORPHANS_KEY, $WORKER_TASKS_KEY

-- A record without a name is no record: Redis lost it (TTL, FLUSHDB, eviction), and no
-- script ever writes a partial one back.
local function is_final(s)
  return s == 'SUCCESS' or s == 'FAILURE' or s == 'REVOKED' or s == 'EXPIRED'
end
local function task_id(key) return string.sub(key, #TASK_PREFIX + 1) end
local BOUNDS = {$METRIC_BOUNDS}
-- One observation of a histogram of the metrics hash: its bucket and its sum.
local function observe(kind, label, seconds)
  local i = #BOUNDS + 1
  for b = 1, #BOUNDS do
    if seconds <= BOUNDS[b] then i = b; break end
  end
  redis.call('HINCRBY', METRICS_KEY, kind .. '|' .. label .. '|' .. i, 1)
  redis.call('HINCRBYFLOAT', METRICS_KEY, kind .. '|' .. label .. '|sum', seconds)
end
-- A final state is counted and streamed, and its event carries what a live chart
-- needs (the task's name and its end-to-end seconds), so no listener reads records.
local function announce(key, state, maxlen, channel, now)
  local event = {id=task_id(key), state=state}
  if is_final(state) then
    redis.call('ZREM', EXPIRING_KEY, task_id(key))
    redis.call('ZREM', DUE_KEY, task_id(key))
    if maxlen ~= '0' then
      redis.call('XADD', HISTORY_STREAM, 'MAXLEN', '~', maxlen, '*', 'id', task_id(key))
    else  -- no history to wait for: the index's trim may delete it (see trim)
      redis.call('HSET', key, 'released', '1')
    end
    local f = redis.call('HMGET', key, 'name', 'backend', 'submitted_at')
    redis.call('HINCRBY', METRICS_KEY, 'f|' .. f[1] .. '|' .. (f[2] or '') .. '|' .. state, 1)
    event.name = f[1]
    local submitted = tonumber(f[3] or '')
    if submitted and now then event.latency = tonumber(now) - submitted end
  end
  redis.call('PUBLISH', channel, cjson.encode(event))
end
-- Bounded records (RECORDS_KEPT): every record is in the index, and the ids the index
-- drops beyond `kept` (the oldest, at most TRIM_STEP a call) are deleted with their
-- records when those are final and `released` (the history has them, or there is no
-- history). A record still running, queued or not yet stored keeps its TTL; the
-- history writer deletes it once stored (RecordStore.release). So Redis holds about
-- `kept` records however high the rate, not rate x RECORD_TTL.
local function trim(index, kept)
  local excess = redis.call('ZCARD', index) - kept
  if excess <= 0 then return end
  local old = redis.call('ZRANGE', index, 0, math.min(excess, $TRIM_STEP) - 1)
  for _, id in ipairs(old) do
    local f = redis.call('HMGET', TASK_PREFIX .. id, 'state', 'released')
    if is_final(f[1]) and f[2] == '1' then redis.call('DEL', TASK_PREFIX .. id) end
  end
  redis.call('ZREM', index, unpack(old))
end
