-- Take one attempt off a counter whose window began at ARGV[1], once per ticket.
-- KEYS[1] counter, KEYS[2] ticket marker; ARGV[1] window start (ms), ARGV[2] window (ms)
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  return 0
end
local c = redis.call('HMGET', KEYS[1], 'n', 's')
if (tonumber(c[1]) or 0) > 0 and c[2] == ARGV[1] then
  redis.call('HINCRBY', KEYS[1], 'n', -1)
  return 1
end
return 0
