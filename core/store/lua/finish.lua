-- finish: write the outcome of a run, unless the record is final already.
--
-- KEYS[1]  the record (hash, qb:task:<id>)
-- KEYS[2]  the owned set of the worker that ran it (set, qb:owned:<worker>)
-- KEYS[3]  runs per worker (hash, qb:workers:tasks)
-- KEYS[4]  the due set (sorted set, qb:due)
-- KEYS[5]  the expiring set (sorted set, qb:expiring)
-- KEYS[6]  the history stream (qb:history)
-- KEYS[7]  the metrics (hash, qb:metrics)
-- ARGV[1]  the state written (SUCCESS, FAILURE, RETRY...)
-- ARGV[2]  now (epoch seconds)
-- ARGV[3]  the result, JSON
-- ARGV[4]  the error, JSON
-- ARGV[5]  the retries so far
-- ARGV[6]  the record's TTL, seconds
-- ARGV[7]  the events channel (qb:events)
-- ARGV[8]  the history stream's MAXLEN ('0': no history)
-- ARGV[9]  when a RETRY's next run is due (epoch seconds)
-- ARGV[10] the worker's id ('': not a worker's run)
-- ARGV[11] the record key's prefix (qb:task:)
-- Returns the state found ('LOST': no record).
--
-- The first final state wins: a REVOKED or EXPIRED record stays so (a cancel that could
-- not stop a run wins), and a second delivery cannot overwrite a finished one.
local K = {task=ARGV[11], due=KEYS[4], expiring=KEYS[5], history=KEYS[6], metrics=KEYS[7],
           maxlen=ARGV[8], channel=ARGV[7]}
redis.call('SREM', KEYS[2], task_id(K, KEYS[1]))
local f = redis.call('HMGET', KEYS[1], 'state', 'name', 'backend', 'started_at')
if not f[2] then return 'LOST' end
if is_final(f[1]) then return f[1] end
local worker = ARGV[10]
if f[1] == 'STARTED' and f[4] and worker ~= '' then  -- a run of this worker ended
  observe(K, 'r', f[2] .. '|' .. (f[3] or ''), math.max(0, tonumber(ARGV[2]) - tonumber(f[4])))
  redis.call('HINCRBY', KEYS[3], worker .. '|run', 1)
  if ARGV[1] ~= 'SUCCESS' then redis.call('HINCRBY', KEYS[3], worker .. '|failed', 1) end
end
local fields = {'state', ARGV[1], 'result', ARGV[3], 'error', ARGV[4], 'retries', ARGV[5]}
if ARGV[1] ~= 'RETRY' then
  table.insert(fields, 'finished_at'); table.insert(fields, ARGV[2])
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[6])
if ARGV[1] == 'RETRY' then redis.call('ZADD', K.due, ARGV[9], task_id(K, KEYS[1])) end
announce(K, KEYS[1], ARGV[1], ARGV[2])
return f[1] or false
