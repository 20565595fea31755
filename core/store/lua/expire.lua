-- expire: a PENDING or RETRY task past its `expires` ends EXPIRED (no worker took it
-- in time).
--
-- KEYS[1]  the record (hash, qb:task:<id>)
-- ARGV[1]  now (epoch seconds)
-- ARGV[2]  the events channel (qb:events)
-- ARGV[3]  the history stream's MAXLEN ('0': no history)
-- Also writes: EXPIRING_KEY; as every final state: DUE_KEY, HISTORY_STREAM, METRICS_KEY.
-- Returns the state now (nothing: no record).
local f = redis.call('HMGET', KEYS[1], 'state', 'expires_at', 'name')
if not f[3] then redis.call('ZREM', EXPIRING_KEY, task_id(KEYS[1])); return false end
local expires = tonumber(f[2] or '')
if (f[1] == 'PENDING' or f[1] == 'RETRY') and expires and expires < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'state', 'EXPIRED', 'finished_at', ARGV[1])
  announce(KEYS[1], 'EXPIRED', ARGV[3], ARGV[2], ARGV[1])
  return 'EXPIRED'
end
if is_final(f[1]) then redis.call('ZREM', EXPIRING_KEY, task_id(KEYS[1])) end
return f[1]
