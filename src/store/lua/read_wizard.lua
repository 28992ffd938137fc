
-- KEYS[1] wizard, KEYS[2] its code tries; ARGV[1] '' (no tries), '0' (read) or '1' (count one)
local record, tries = read_wizard(KEYS[1], KEYS[2], ARGV[1])
return {record, tries}
