-- GCRA (generic cell rate algorithm): one request against an allowance of
-- ARGV[3] requests, refilled one per ARGV[2] microseconds.
-- KEYS[1] theoretical arrival time (µs); ARGV[1] now (µs)
-- Answers {allowed (1/0), remaining, µs until the allowance is full again or, if refused, until the next is allowed}
local now, interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', KEYS[1])) or now, now)
local tolerance = interval * (burst - 1)
if tat - now > tolerance then
  return {0, 0, string.format('%.0f', tat - now - tolerance)}
end
local next = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', string.format('%.0f', math.ceil((next - now) / 1000)))
return {1, math.floor((burst * interval - (next - now)) / interval), string.format('%.0f', next - now)}
