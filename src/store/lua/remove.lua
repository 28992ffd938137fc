-- Delete a versioned record if it is at the expected version.
-- KEYS[1] record; ARGV[1] expected version
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
