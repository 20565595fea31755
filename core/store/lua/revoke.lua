-- revoke: cancel a task unless it is final (or running, and running_too is '0').
--
-- KEYS[1]  the record (hash, qb:task:<id>)
-- ARGV[1]  now (epoch seconds)
-- ARGV[2]  the events channel (qb:events)
-- ARGV[3]  running_too: '1' revokes a STARTED task too
-- ARGV[4]  the history stream's MAXLEN ('0': no history)
-- Also writes, as every final state: DUE_KEY, EXPIRING_KEY, HISTORY_STREAM, METRICS_KEY.
-- Returns the state found (nothing: no record).
local f = redis.call('HMGET', KEYS[1], 'state', 'name')
if not f[2] then return false end
if is_final(f[1]) then return f[1] end
if f[1] == 'STARTED' and ARGV[3] == '0' then return f[1] end
redis.call('HSET', KEYS[1], 'state', 'REVOKED', 'finished_at', ARGV[1])
announce(KEYS[1], 'REVOKED', ARGV[4], ARGV[2], ARGV[1])
return f[1]
