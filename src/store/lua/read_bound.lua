
-- A single Redis only (it names keys it was not given, which a Cluster forbids).
-- KEYS[1] wizard, KEYS[2] its code tries; ARGV[1..4] as read_account.lua;
-- ARGV[5] code tries as in read_wizard.lua; ARGV[6] the account keys' text
-- before the email, ARGV[7..10] their suffixes (user, counter, block, TOTP step)
local wizard, tries = read_wizard(KEYS[1], KEYS[2], ARGV[5])
-- The account (see insert.lua): its length at byte 17, then the account.
local length = wizard and string.byte(wizard, 17) or 0
if length == 0 then
  return {wizard, tries, false}
end
local email = string.sub(wizard, 18, 17 + length)
local function key(suffix)
  return ARGV[6] .. email .. suffix
end
return {wizard, tries, read_account(key(ARGV[7]), key(ARGV[8]), key(ARGV[9]), key(ARGV[10]),
  tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4])}
