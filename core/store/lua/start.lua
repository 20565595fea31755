-- start: mark a record STARTED, owned by this worker, unless it must not run.
--
-- KEYS[1]  the record (hash, qb:task:<id>)
-- KEYS[2]  this worker's owned set (set, qb:owned:<worker>)
-- KEYS[3]  the workers' heartbeats (sorted set, qb:workers:seen)
-- ARGV[1]  now (epoch seconds)
-- ARGV[2]  the events channel (qb:events)
-- ARGV[3]  this worker's id
-- ARGV[4]  the history stream's MAXLEN ('0': no history)
-- ARGV[5]  the lease: seconds an owner may go without a heartbeat
-- ARGV[6]  run: this delivery's token in its worker (a try again of a start whose
--          reply was lost finds its own run, not a BUSY one)
-- Also writes: ORPHANS_KEY, DUE_KEY, a lapsed owner's owned set; when it ends the
-- task (EXPIRED), as every final state: EXPIRING_KEY, HISTORY_STREAM, METRICS_KEY.
-- Returns {state found, retries so far}; 'LOST' (no record: do not run) or 'BUSY'
-- (STARTED by a worker whose heartbeat is fresh, this one included: do not run).
--
-- A STARTED record whose owner's heartbeat lapsed is taken over: that delivery died.
-- Core counts retries itself (a run after RETRY is the next retry), so a redelivery
-- after a worker died is not a retry on any backend.
local id = task_id(KEYS[1])
local f = redis.call('HMGET', KEYS[1], 'state', 'retries', 'expires_at', 'worker', 'name',
                    'backend', 'submitted_at', 'run')
if not f[5] then return {'LOST', 0} end
local found = f[1]
local retries = tonumber(f[2] or '0') or 0
if is_final(found) then return {found, retries} end
local now = tonumber(ARGV[1])
if found == 'STARTED' and f[4] == ARGV[3] and ARGV[6] ~= '' and f[8] == ARGV[6] then
  return {'', retries}  -- this very run started it: its first try's reply was lost
end
if found == 'STARTED' and f[4] then
  local seen = redis.call('ZSCORE', KEYS[3], f[4])
  if seen and tonumber(seen) >= now - tonumber(ARGV[5]) then return {'BUSY', retries} end
  redis.call('SREM', OWNED_PREFIX .. f[4], id)
end
redis.call('SREM', ORPHANS_KEY, id)
if found == 'RETRY' then retries = retries + 1 end
local expires = tonumber(f[3] or '')
if expires and expires < now then
  redis.call('HSET', KEYS[1], 'state', 'EXPIRED', 'finished_at', ARGV[1])
  announce(KEYS[1], 'EXPIRED', ARGV[4], ARGV[2], ARGV[1])
  return {'EXPIRED', retries}
end
redis.call('HSET', KEYS[1], 'state', 'STARTED', 'started_at', ARGV[1], 'retries', retries,
           'worker', ARGV[3], 'run', ARGV[6])
redis.call('SADD', KEYS[2], id)
redis.call('ZREM', DUE_KEY, id)
-- Queue wait: submitted to started, for a run from PENDING (not a retry's, which
-- waited on its backoff; a redelivered task's counts again).
if (not found or found == 'PENDING') and f[7] then
  observe('w', f[5] .. '|' .. (f[6] or ''), math.max(0, now - tonumber(f[7])))
end
announce(KEYS[1], 'STARTED', ARGV[4], ARGV[2])
return {found or '', retries}
