-- Forget an account's count and block unless it changed since a step read
-- it: its user record is no longer at the version, or its last TOTP step is
-- no longer the one the step recorded.
-- KEYS[1] user, KEYS[2] TOTP step, KEYS[3] counter, KEYS[4] block
-- ARGV[1] the user's version (8 bytes), ARGV[2] the step as recorded ('' for none)
local user = redis.call('GET', KEYS[1])
if not user or string.sub(user, 1, 8) ~= ARGV[1] then
  return 0
end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[3], KEYS[4])
return 1
