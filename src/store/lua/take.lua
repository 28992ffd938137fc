-- A fixed-window counter gated by a block.
-- KEYS[1] counter (hash n, s), KEYS[2] block (end, ms)
-- ARGV[1] now (ms), ARGV[2] window (ms), ARGV[3] count (1) or only check the block (0)
local now = tonumber(ARGV[1])
local blocked = tonumber(redis.call('GET', KEYS[2]))
if blocked and blocked > now then
  return {'blocked', blocked, 0}
end
if ARGV[3] == '0' then
  return {'open', 0, 0}
end
local c = redis.call('HMGET', KEYS[1], 'n', 's')
local count, since = tonumber(c[1]) or 0, tonumber(c[2])
local window = tonumber(ARGV[2])
if not since or since + window <= now then
  count, since = 0, now
end
count = count + 1
local since_ms = string.format('%.0f', since)
redis.call('HSET', KEYS[1], 'n', count, 's', since_ms)
-- Relative: Redis expires keys by its own clock, which may differ from ours.
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', since + window - now))
return {'counted', count, since_ms}
