-- scan: a chunk of the index, filtered by state and name, for the dashboard's task
-- table (core/api/dashboard/data.py). Server-side, so a filter reads two fields of a
-- chunk without sending them: about 1 ms of Redis per chunk of 1,000.
--
-- KEYS[1]  the index of records (sorted set, qb:tasks)
-- ARGV[1]  the first rank read (newest first)
-- ARGV[2]  how many ids to read from there
-- ARGV[3]  the lowest score (submit time) in the window
-- ARGV[4]  the state wanted ('': any)
-- ARGV[5]  the task name wanted ('': any)
-- ARGV[6]  how many matches are wanted
-- Returns how many ids it read (0: none left in the window), then "rank:id" of the
-- first ARGV[6] that match.
local first = tonumber(ARGV[1])
local found = redis.call('ZREVRANGE', KEYS[1], first, first + tonumber(ARGV[2]) - 1,
                         'WITHSCORES')
local low = tonumber(ARGV[3])
local out, wanted, read = {0}, tonumber(ARGV[6]), 0
for i = 1, #found, 2 do
  if tonumber(found[i + 1]) < low then break end
  read = read + 1
  local f = redis.call('HMGET', TASK_PREFIX .. found[i], 'state', 'name')
  if (ARGV[4] == '' or f[1] == ARGV[4]) and (ARGV[5] == '' or f[2] == ARGV[5]) then
    table.insert(out, (first + read - 1) .. ':' .. found[i])
    if #out - 1 == wanted then out[1] = read; return out end
  end
end
out[1] = read
return out
