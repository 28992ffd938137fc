-- KEYS[1] a sorted set; ARGV[1] the member, ARGV[2] when it ends (ms), ARGV[3] now (ms),
-- ARGV[4] how many members to keep at most
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local evicted = {}
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if over > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], over)
  for i = 1, #popped, 2 do
    evicted[#evicted + 1] = popped[i]
  end
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last > 0 then
  -- Relative: Redis expires keys by its own clock, which may differ from ours.
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', tonumber(last[2]) - tonumber(ARGV[3])))
end
return evicted
