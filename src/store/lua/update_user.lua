-- KEYS[1] user key; KEYS[2] new email key; ARGV[1] user id; ARGV[2] user JSON;
-- ARGV[3] key prefix. Moves the email index if the email changed.
local current = redis.call('GET', KEYS[1])
if not current then
  return 'missing'
end
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then
  return 'taken'
end
local old_email_key = ARGV[3] .. 'email:' .. cjson.decode(current)['email']
if old_email_key ~= KEYS[2] then
  redis.call('DEL', old_email_key)
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], ARGV[2])
return 'ok'
