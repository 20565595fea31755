-- resend: count one more delivery of a PENDING or RETRY task that nobody took since
-- the reaper looked, and make it due again now, for the reaper to send it again.
--
-- KEYS[1]  the record (hash, qb:task:<id>)
-- ARGV[1]  its deliveries as the reaper read them
-- ARGV[2]  the latest due time it may have (REDELIVERY_AFTER ago; epoch seconds)
-- ARGV[3]  now (epoch seconds)
-- Also reads and writes: DUE_KEY.
-- Returns the record (HGETALL), or nothing: another reaper did it, or a worker took
-- it meanwhile. One of several reapers wins.
local id = task_id(KEYS[1])
local due = redis.call('ZSCORE', DUE_KEY, id)
if not due or tonumber(due) > tonumber(ARGV[2]) then return false end
local f = redis.call('HMGET', KEYS[1], 'state', 'deliveries', 'name')
if not f[3] or (f[1] ~= 'PENDING' and f[1] ~= 'RETRY') then
  redis.call('ZREM', DUE_KEY, id)
  return false
end
if (tonumber(f[2] or '0') or 0) ~= tonumber(ARGV[1]) then return false end
redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
redis.call('ZADD', DUE_KEY, ARGV[3], id)
return redis.call('HGETALL', KEYS[1])
