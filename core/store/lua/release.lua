-- release: records the history has just stored are `released`: the index's trim may
-- delete each; one the index has dropped already is deleted now.
--
-- KEYS[1]  the index of records (sorted set, qb:tasks)
-- KEYS[2..] the records (hashes, qb:task:<id>)
for i = 2, #KEYS do
  local key = KEYS[i]
  if redis.call('HEXISTS', key, 'name') == 1 then
    if redis.call('ZSCORE', KEYS[1], task_id(key)) then
      redis.call('HSET', key, 'released', '1')
    else
      redis.call('DEL', key)
    end
  end
end
