-- The helpers every script shares, prepended to each at load (core/store/scripts.py).
--
-- No key name is written here: a script passes the names it was given in `K`, a
-- table it builds from its own KEYS and ARGV:
--   K.task      the record key's prefix (qb:task:), to read a task id off a record key
--               and to build the key of a record whose id a script reads
--   K.due       the due set (sorted set, qb:due)
--   K.expiring  the expiring set (sorted set, qb:expiring)
--   K.history   the history stream (qb:history)
--   K.metrics   the metrics hash (qb:metrics)
--   K.maxlen    the history stream's MAXLEN ('0': no history)
--   K.channel   the events channel (qb:events)
-- The histogram's bounds (BOUNDS) and the trim's step are filled in at load, from
-- core/store/keys.py METRIC_BOUNDS and core/store/scripts.py TRIM_STEP.
--
-- A record without a name is no record: Redis lost it (TTL, FLUSHDB, eviction), and no
-- script ever writes a partial one back.
local function is_final(s)
  return s == 'SUCCESS' or s == 'FAILURE' or s == 'REVOKED' or s == 'EXPIRED'
end
local function task_id(K, key) return string.sub(key, #K.task + 1) end
local BOUNDS = {$METRIC_BOUNDS}
-- One observation of a histogram of the metrics hash: its bucket and its sum.
local function observe(K, kind, label, seconds)
  local i = #BOUNDS + 1
  for b = 1, #BOUNDS do
    if seconds <= BOUNDS[b] then i = b; break end
  end
  redis.call('HINCRBY', K.metrics, kind .. '|' .. label .. '|' .. i, 1)
  redis.call('HINCRBYFLOAT', K.metrics, kind .. '|' .. label .. '|sum', seconds)
end
-- A final state is counted and streamed, and its event carries what a live chart
-- needs (the task's name and its end-to-end seconds), so no listener reads records.
local function announce(K, key, state, now)
  local event = {id=task_id(K, key), state=state}
  if is_final(state) then
    redis.call('ZREM', K.expiring, task_id(K, key))
    redis.call('ZREM', K.due, task_id(K, key))
    if K.maxlen ~= '0' then
      redis.call('XADD', K.history, 'MAXLEN', '~', K.maxlen, '*', 'id', task_id(K, key))
    else  -- no history to wait for: the index's trim may delete it (see trim)
      redis.call('HSET', key, 'released', '1')
    end
    local f = redis.call('HMGET', key, 'name', 'backend', 'submitted_at')
    redis.call('HINCRBY', K.metrics, 'f|' .. f[1] .. '|' .. (f[2] or '') .. '|' .. state, 1)
    event.name = f[1]
    local submitted = tonumber(f[3] or '')
    if submitted and now then event.latency = tonumber(now) - submitted end
  end
  redis.call('PUBLISH', K.channel, cjson.encode(event))
end
-- Bounded records (RECORDS_KEPT): every record is in the index, and the ids the index
-- drops beyond `kept` (the oldest, at most TRIM_STEP a call) are deleted with their
-- records when those are final and `released` (the history has them, or there is no
-- history). A record still running, queued or not yet stored keeps its TTL; the
-- history writer deletes it once stored (RecordStore.release). So Redis holds about
-- `kept` records however high the rate, not rate x RECORD_TTL.
local function trim(K, index, kept)
  local excess = redis.call('ZCARD', index) - kept
  if excess <= 0 then return end
  local old = redis.call('ZRANGE', index, 0, math.min(excess, $TRIM_STEP) - 1)
  for _, id in ipairs(old) do
    local f = redis.call('HMGET', K.task .. id, 'state', 'released')
    if is_final(f[1]) and f[2] == '1' then redis.call('DEL', K.task .. id) end
  end
  redis.call('ZREM', index, unpack(old))
end
