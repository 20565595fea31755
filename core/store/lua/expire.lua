-- expire: a PENDING or RETRY task past its `expires` ends EXPIRED (no worker took it
-- in time).
--
-- KEYS[1]  the record (hash, qb:task:<id>)
-- KEYS[2]  the due set (sorted set, qb:due)
-- KEYS[3]  the expiring set (sorted set, qb:expiring)
-- KEYS[4]  the history stream (qb:history)
-- KEYS[5]  the metrics (hash, qb:metrics)
-- ARGV[1]  now (epoch seconds)
-- ARGV[2]  the events channel (qb:events)
-- ARGV[3]  the history stream's MAXLEN ('0': no history)
-- ARGV[4]  the record key's prefix (qb:task:)
-- Returns the state now (nothing: no record).
local K = {task=ARGV[4], due=KEYS[2], expiring=KEYS[3], history=KEYS[4], metrics=KEYS[5],
           maxlen=ARGV[3], channel=ARGV[2]}
local f = redis.call('HMGET', KEYS[1], 'state', 'expires_at', 'name')
if not f[3] then redis.call('ZREM', K.expiring, task_id(K, KEYS[1])); return false end
local expires = tonumber(f[2] or '')
if (f[1] == 'PENDING' or f[1] == 'RETRY') and expires and expires < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'state', 'EXPIRED', 'finished_at', ARGV[1])
  announce(K, KEYS[1], 'EXPIRED', ARGV[1])
  return 'EXPIRED'
end
if is_final(f[1]) then redis.call('ZREM', K.expiring, task_id(K, KEYS[1])) end
return f[1]
