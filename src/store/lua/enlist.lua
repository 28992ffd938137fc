-- KEYS[1] a sorted set; ARGV[1] the member, ARGV[2] when it ends (ms), ARGV[3] now (ms),
-- ARGV[4] how many members to keep
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local beyond = {}
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if over > 0 then
  -- The ones that end first, one more in case the member itself is among them.
  for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, over)) do
    if member ~= ARGV[1] and #beyond < over then
      beyond[#beyond + 1] = member
    end
  end
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last > 0 then
  -- Relative: Redis expires keys by its own clock, which may differ from ours.
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', tonumber(last[2]) - tonumber(ARGV[3])))
end
return beyond
