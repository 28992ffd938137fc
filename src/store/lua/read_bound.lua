
-- A single Redis only (it names keys it was not given, which a Cluster forbids).
-- KEYS[1] wizard; ARGV[1..4] as read_account.lua; ARGV[5] the account keys'
-- text before the email, ARGV[6..9] their suffixes (user, counter, block, TOTP step)
local wizard = redis.call('HMGET', KEYS[1], 'v', 'a', 'd')
local email = wizard[2]
if not wizard[1] or not email then
  return {wizard, false}
end
local function key(suffix)
  return ARGV[5] .. email .. suffix
end
return {wizard, read_account(key(ARGV[6]), key(ARGV[7]), key(ARGV[8]), key(ARGV[9]),
  tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4])}
