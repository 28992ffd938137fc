-- Compare-and-set of one wizard step.
-- KEYS[1] wizard key; ARGV[1] expected version; ARGV[2] new body;
-- ARGV[3] bound user id ('' for none); ARGV[4] purge time (unix ms).
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'v', tostring(tonumber(ARGV[1]) + 1), 'body', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'user', ARGV[3])
end
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1
