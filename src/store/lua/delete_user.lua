-- KEYS[1] user key; ARGV[1] key prefix. Removes the user and its email index.
local current = redis.call('GET', KEYS[1])
if not current then
  return 0
end
redis.call('DEL', KEYS[1], ARGV[1] .. 'email:' .. cjson.decode(current)['email'])
return 1
