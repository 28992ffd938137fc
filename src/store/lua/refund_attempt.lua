-- Gives back an attempt taken by a request that ended without a verdict.
-- KEYS[1] attempts counter; KEYS[2] wizard key ('' unless a code try is given back too).
local count = tonumber(redis.call('HGET', KEYS[1], 'count'))
if count and count > 0 then
  redis.call('HINCRBY', KEYS[1], 'count', -1)
end
if KEYS[2] ~= '' then
  local codes = tonumber(redis.call('HGET', KEYS[2], 'codes'))
  if codes and codes > 0 then
    redis.call('HINCRBY', KEYS[2], 'codes', -1)
  end
end
return 1
