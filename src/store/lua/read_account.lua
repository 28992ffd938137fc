
-- KEYS[1..4] the account's user, counter, block and TOTP step
-- ARGV[1] now (ms), ARGV[2] window (ms), ARGV[3] count (1/0), ARGV[4] read the TOTP step (1/0)
return read_account(KEYS[1], KEYS[2], KEYS[3], KEYS[4], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4])
