-- reclaim: take a STARTED task from its owner (dead, or whose run was cancelled) for
-- one more delivery.
--
-- KEYS[1]  the record (hash, qb:task:<id>)
-- KEYS[2]  the set it is owned in: a dead worker's (qb:owned:<worker>) or the
--          orphans (qb:orphans)
-- ARGV[1]  the owner ('' for an orphan)
-- ARGV[2]  the events channel (qb:events)
-- ARGV[3]  now (epoch seconds)
-- Also writes: DUE_KEY.
-- Returns the record (HGETALL), or nothing to redo.
--
-- A STARTED record of that owner goes back to PENDING, its deliveries counted. It
-- stays in the set until the caller has sent it (`_again` in core/worker/reaper.py),
-- so a failed send is tried again; a PENDING one still in the set is such a retry.
local id = task_id(KEYS[1])
if redis.call('SISMEMBER', KEYS[2], id) == 0 then return false end
local f = redis.call('HMGET', KEYS[1], 'state', 'worker', 'name')
if not f[3] or (f[1] ~= 'STARTED' and f[1] ~= 'PENDING')
   or (ARGV[1] ~= '' and f[2] ~= ARGV[1]) then
  redis.call('SREM', KEYS[2], id)
  return false
end
if f[1] == 'STARTED' then
  redis.call('HSET', KEYS[1], 'state', 'PENDING')
  redis.call('HDEL', KEYS[1], 'started_at')
  redis.call('PUBLISH', ARGV[2], cjson.encode({id=id, state='PENDING'}))
end
redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
redis.call('ZADD', DUE_KEY, ARGV[3], id)
return redis.call('HGETALL', KEYS[1])
