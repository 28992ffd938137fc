
-- A single Redis only (it names keys it was not given, which a Cluster forbids).
-- KEYS[1] wizard, KEYS[2] its code tries; ARGV[1..4] as read_account.lua;
-- ARGV[5] code tries as in read_wizard.lua, ARGV[6] the most tries with which
-- the account's attempt is still taken when counting one; ARGV[7] the account
-- keys' text before the email, ARGV[8..11] their suffixes (user, counter,
-- block, TOTP step)
local wizard, tries = read_wizard(KEYS[1], KEYS[2], ARGV[5])
local count = ARGV[3]
if ARGV[5] == '1' and tries and tries > tonumber(ARGV[6]) then
  count = '0'
end
-- The account (see insert.lua): its length at byte 17, then the account.
local length = wizard and string.byte(wizard, 17) or 0
if length == 0 then
  return {wizard, tries, false}
end
local email = string.sub(wizard, 18, 17 + length)
local function key(suffix)
  return ARGV[7] .. email .. suffix
end
return {wizard, tries, read_account(key(ARGV[8]), key(ARGV[9]), key(ARGV[10]), key(ARGV[11]),
  tonumber(ARGV[1]), tonumber(ARGV[2]), count, ARGV[4])}
