
-- A single Redis only (it names keys it was not given, which a Cluster forbids).
-- KEYS[1] wizard; ARGV[1..4] as read_account.lua; ARGV[5] the account keys'
-- text before the email, ARGV[6..9] their suffixes (user, counter, block, TOTP step)
local wizard = redis.call('GET', KEYS[1])
-- The account (see insert.lua): its length at byte 17, then the account.
local length = wizard and string.byte(wizard, 17) or 0
if length == 0 then
  return {wizard, false}
end
local email = string.sub(wizard, 18, 17 + length)
local function key(suffix)
  return ARGV[5] .. email .. suffix
end
return {wizard, read_account(key(ARGV[6]), key(ARGV[7]), key(ARGV[8]), key(ARGV[9]),
  tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4])}
