-- Gives back an attempt taken by a request that ended without a verdict,
-- only if the window it was taken in is still the counter's (Counter::refund).
-- KEYS[1] attempts counter; KEYS[2] wizard key ('' unless a code try is given back too).
-- ARGV[1] start of the attempt's window (ms).
local c = redis.call('HMGET', KEYS[1], 'count', 'since')
local count, since = tonumber(c[1]), tonumber(c[2])
if count and count > 0 and since == tonumber(ARGV[1]) then
  redis.call('HINCRBY', KEYS[1], 'count', -1)
end
if KEYS[2] ~= '' then
  local codes = tonumber(redis.call('HGET', KEYS[2], 'codes'))
  if codes and codes > 0 then
    redis.call('HINCRBY', KEYS[2], 'codes', -1)
  end
end
return 1
