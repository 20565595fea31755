-- create: store a new PENDING record and queue its message, in one step.
--
-- KEYS[1]  the record (hash, qb:task:<id>)
-- KEYS[2]  the index of records (sorted set, qb:tasks)
-- KEYS[3]  the idempotency key (string, qb:idem:<task name>:<client's key>)
-- KEYS[4]? the periodic entry's fired tasks (sorted set, qb:schedule:<name>:tasks),
--          passed only for a record that names its entry (`schedule`)
-- KEYS[5]? the periodic entry's state (hash, qb:schedule:<name>), the same
-- ARGV[1]  the record's TTL, seconds (also the idempotency key's)
-- ARGV[2]  the records kept (RECORDS_KEPT; also an entry's fired tasks kept)
-- ARGV[3]  the events channel (qb:events)
-- ARGV[4]  submitted at (epoch seconds): the index's score
-- ARGV[5]  idempotent: '1' when KEYS[3] is a client's key, '0' when unused
-- ARGV[6]  expires at (epoch seconds; '': never)
-- ARGV[7]  the metric label, task|backend
-- ARGV[8]  the queue name ('': the default)
-- ARGV[9]  the record's field/value items, packed with MessagePack
-- ARGV[10] the commands that queue the task's message (each a list of words), packed
--          with MessagePack (two arguments instead of fifty, which redis-py packs
--          word by word in Python: most of a submit's CPU)
-- ARGV[11] when its message is due (its countdown or eta; epoch seconds)
-- Also writes: METRICS_KEY, QUEUES_KEY, DUE_KEY, EXPIRING_KEY; trims the index.
-- Returns the id of the task that stands.
--
-- Claim, create and queue are one step: a second submit with the key finds the first
-- record (and queues nothing), never a key bound to nothing, and no record is left
-- without its message. A record that names a periodic entry joins that entry's index
-- and state in the same step (core/schedule/scheduler.py). A record that exists
-- already is left as it is, with nothing queued.
local id = task_id(KEYS[1])
-- The same create again (a client's retry after it lost the reply): the task stands,
-- and may have run already; writing it again would make it PENDING and queue it twice.
if redis.call('HEXISTS', KEYS[1], 'name') == 1 then return id end
if ARGV[5] == '1' then
  local first = redis.call('GET', KEYS[3])
  if first and redis.call('HEXISTS', TASK_PREFIX .. first, 'name') == 1 then return first end
  redis.call('SET', KEYS[3], id, 'EX', ARGV[1])
end
redis.call('HSET', KEYS[1], unpack(cmsgpack.unpack(ARGV[9])))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('HINCRBY', METRICS_KEY, 's|' .. ARGV[7], 1)
if ARGV[8] ~= '' then redis.call('SADD', QUEUES_KEY, ARGV[8]) end
for _, command in ipairs(cmsgpack.unpack(ARGV[10])) do  -- the library's message
  redis.call(unpack(command))
end
redis.call('ZADD', KEYS[2], ARGV[4], id)
redis.call('ZADD', DUE_KEY, ARGV[11], id)
trim(KEYS[2], tonumber(ARGV[2]))
if ARGV[6] ~= '' then redis.call('ZADD', EXPIRING_KEY, ARGV[6], id) end
if KEYS[4] then  -- fired by a periodic entry: its index and its state
  redis.call('ZADD', KEYS[4], ARGV[4], id)
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -tonumber(ARGV[2]) - 1)
  redis.call('HSET', KEYS[5], 'last_run_at', ARGV[4], 'last_task_id', id)
end
redis.call('PUBLISH', ARGV[3], cjson.encode({id=id, state='PENDING'}))
return id
