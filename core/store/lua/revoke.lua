-- revoke: cancel a task unless it is final (or running, and running_too is '0').
--
-- KEYS[1]  the record (hash, qb:task:<id>)
-- KEYS[2]  the due set (sorted set, qb:due)
-- KEYS[3]  the expiring set (sorted set, qb:expiring)
-- KEYS[4]  the history stream (qb:history)
-- KEYS[5]  the metrics (hash, qb:metrics)
-- ARGV[1]  now (epoch seconds)
-- ARGV[2]  the events channel (qb:events)
-- ARGV[3]  running_too: '1' revokes a STARTED task too
-- ARGV[4]  the history stream's MAXLEN ('0': no history)
-- ARGV[5]  the record key's prefix (qb:task:)
-- Returns the state found (nothing: no record).
local K = {task=ARGV[5], due=KEYS[2], expiring=KEYS[3], history=KEYS[4], metrics=KEYS[5],
           maxlen=ARGV[4], channel=ARGV[2]}
local f = redis.call('HMGET', KEYS[1], 'state', 'name')
if not f[2] then return false end
if is_final(f[1]) then return f[1] end
if f[1] == 'STARTED' and ARGV[3] == '0' then return f[1] end
redis.call('HSET', KEYS[1], 'state', 'REVOKED', 'finished_at', ARGV[1])
announce(K, KEYS[1], 'REVOKED', ARGV[1])
return f[1]
