-- KEYS[1] user key; KEYS[2] new email key; ARGV[1] user id; ARGV[2] user JSON;
-- ARGV[3] key prefix; ARGV[4] the credentials version the update was based on.
-- Moves the email index if the email changed.
local current = redis.call('GET', KEYS[1])
if not current then
  return 'missing'
end
current = cjson.decode(current)
if (tonumber(current['credentials_version']) or 0) ~= tonumber(ARGV[4]) then
  return 'changed'
end
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then
  return 'taken'
end
local old_email_key = ARGV[3] .. 'email:' .. current['email']
if old_email_key ~= KEYS[2] then
  redis.call('DEL', old_email_key)
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], ARGV[2])
return 'ok'
