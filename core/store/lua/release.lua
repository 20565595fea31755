-- release: records the history has just stored are `released`: the index's trim may
-- delete each; one the index has dropped already is deleted now.
--
-- KEYS[1]  the index of records (sorted set, qb:tasks)
-- KEYS[2..] the records (hashes, qb:task:<id>)
-- ARGV[1]  the record key's prefix (qb:task:)
local K = {task=ARGV[1]}
for i = 2, #KEYS do
  local key = KEYS[i]
  if redis.call('HEXISTS', key, 'name') == 1 then
    if redis.call('ZSCORE', KEYS[1], task_id(K, key)) then
      redis.call('HSET', key, 'released', '1')
    else
      redis.call('DEL', key)
    end
  end
end
