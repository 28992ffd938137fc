-- Insert a record unless the key holds one (retried: done if it is ours).
-- A record is one string: version (8 bytes), write nonce (8 bytes), the
-- account's length (1 byte) and the account, then the body.
-- KEYS[1] record; ARGV[1] the record, ARGV[2] ttl ms (0: none)
local stored = redis.call('GET', KEYS[1])
if stored then
  return string.sub(stored, 1, 16) == string.sub(ARGV[1], 1, 16) and 1 or 0
end
if ARGV[2] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
