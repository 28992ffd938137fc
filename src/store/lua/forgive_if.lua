-- Forget an account's count and block unless it changed since a step read
-- it: its user record is no longer at the version, its last TOTP step is no
-- longer the one the step recorded, or (single Redis only: another slot)
-- the wizard is no longer as the step wrote it.
-- KEYS[1] user, KEYS[2] TOTP step, KEYS[3] counter, KEYS[4] block, KEYS[5] wizard (optional)
-- ARGV[1] the user's version (8 bytes), ARGV[2] the step as recorded ('' for none),
-- ARGV[3] the wizard's version and write nonce (16 bytes; '' for none)
local user = redis.call('GET', KEYS[1])
if not user or string.sub(user, 1, 8) ~= ARGV[1] then
  return 0
end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return 0
end
if ARGV[3] ~= '' and string.sub(redis.call('GET', KEYS[5]) or '', 1, 16) ~= ARGV[3] then
  return 0
end
redis.call('DEL', KEYS[3], KEYS[4])
return 1
