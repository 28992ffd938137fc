-- Take one code try off a wizard's count, once per ticket.
-- KEYS[1] code tries, KEYS[2] ticket marker; ARGV[1] how long to remember the ticket (ms)
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  return 0
end
if (tonumber(redis.call('GET', KEYS[1])) or 0) > 0 then
  redis.call('DECR', KEYS[1])
  return 1
end
return 0
