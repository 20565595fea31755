-- finish: write the outcome of a run, unless the record is final already.
--
-- KEYS[1]  the record (hash, qb:task:<id>)
-- KEYS[2]  the owned set of the worker that ran it (set, qb:owned:<worker>; the
--          worker '' for an outcome not of a worker's run)
-- ARGV[1]  the state written (SUCCESS, FAILURE, RETRY...)
-- ARGV[2]  now (epoch seconds)
-- ARGV[3]  the result, JSON
-- ARGV[4]  the error, JSON
-- ARGV[5]  the retries so far
-- ARGV[6]  the record's TTL, seconds
-- ARGV[7]  the events channel (qb:events)
-- ARGV[8]  the history stream's MAXLEN ('0': no history)
-- ARGV[9]  when a RETRY's next run is due (epoch seconds)
-- Also writes: WORKER_TASKS_KEY, METRICS_KEY, DUE_KEY (a RETRY); for a final state:
-- EXPIRING_KEY, HISTORY_STREAM.
-- Returns the state found ('LOST': no record).
--
-- The first final state wins: a REVOKED or EXPIRED record stays so (a cancel that could
-- not stop a run wins), and a second delivery cannot overwrite a finished one.
redis.call('SREM', KEYS[2], task_id(KEYS[1]))
local f = redis.call('HMGET', KEYS[1], 'state', 'name', 'backend', 'started_at')
if not f[2] then return 'LOST' end
if is_final(f[1]) then return f[1] end
local worker = string.sub(KEYS[2], #OWNED_PREFIX + 1)
if f[1] == 'STARTED' and f[4] and worker ~= '' then  -- a run of this worker ended
  observe('r', f[2] .. '|' .. (f[3] or ''), math.max(0, tonumber(ARGV[2]) - tonumber(f[4])))
  redis.call('HINCRBY', WORKER_TASKS_KEY, worker .. '|run', 1)
  if ARGV[1] ~= 'SUCCESS' then redis.call('HINCRBY', WORKER_TASKS_KEY, worker .. '|failed', 1) end
end
local fields = {'state', ARGV[1], 'result', ARGV[3], 'error', ARGV[4], 'retries', ARGV[5]}
if ARGV[1] ~= 'RETRY' then
  table.insert(fields, 'finished_at'); table.insert(fields, ARGV[2])
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[6])
if ARGV[1] == 'RETRY' then redis.call('ZADD', DUE_KEY, ARGV[9], task_id(KEYS[1])) end
announce(KEYS[1], ARGV[1], ARGV[8], ARGV[7], ARGV[2])
return f[1] or false
