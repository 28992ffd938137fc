-- Compare-and-set of a versioned record; the key keeps its time to live.
-- KEYS[1] record; ARGV[1] expected version, ARGV[2] nonce, ARGV[3] account ('' for none), ARGV[4] body
local stored = redis.call('HMGET', KEYS[1], 'v', 'n')
local next = tostring(tonumber(ARGV[1]) + 1)
if stored[1] == next and stored[2] == ARGV[2] then
  return 1 -- this very write, retried after a dropped connection
end
if stored[1] ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'v', next, 'n', ARGV[2], 'd', ARGV[4])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'a', ARGV[3])
else
  redis.call('HDEL', KEYS[1], 'a')
end
return 1
