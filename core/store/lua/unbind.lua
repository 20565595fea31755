-- unbind: let an idempotency key go if it names that task.
--
-- KEYS[1]  the idempotency key (string, qb:idem:<task name>:<client's key>)
-- ARGV[1]  the task id
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
