-- Claim a member of a claim set for a nonce unless another nonce claimed it
-- first; the same nonce (a retry) holds it too. Nonces are decimal strings,
-- compared as strings: a Lua number would round a u64.
-- KEYS[1] the claim set (a hash: member -> nonce); ARGV[1] the member, ARGV[2] the nonce
-- Answers {held (1/0), how many members the set has claimed}
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
local held = redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2]
return {held and 1 or 0, redis.call('HLEN', KEYS[1])}
