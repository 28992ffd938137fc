-- Reads a wizard and the user it concerns in one round trip.
-- KEYS[1] wizard key; ARGV[1] key prefix; ARGV[2] email to look up ('' for none).
-- The user is the one bound to the wizard, else the owner of the email.
local w = redis.call('HMGET', KEYS[1], 'v', 'body', 'user')
if not w[1] then
  return false
end
local uid = w[3]
if not uid and ARGV[2] ~= '' then
  uid = redis.call('GET', ARGV[1] .. 'email:' .. ARGV[2])
end
local user = false
if uid then
  user = redis.call('GET', ARGV[1] .. 'user:' .. uid)
end
return {w[1], w[2], user}
