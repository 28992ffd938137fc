-- Block until ARGV[1] unless already blocked (never extended), forgetting the count.
-- KEYS[1] counter, KEYS[2] block; ARGV[1] end (ms), ARGV[2] time to live (ms)
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
