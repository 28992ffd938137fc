-- Insert a versioned record unless the key holds one (retried: done if it is ours).
-- KEYS[1] record; ARGV[1] nonce, ARGV[2] account ('' for none), ARGV[3] body, ARGV[4] ttl ms (0: none),
-- ARGV[5] version
local stored = redis.call('HGET', KEYS[1], 'n')
if stored then
  return stored == ARGV[1] and 1 or 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[5], 'n', ARGV[1], 'd', ARGV[3])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'a', ARGV[2])
end
if ARGV[4] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1
