-- Versioned compare-and-set of the runtime settings.
-- KEYS[1] the settings (JSON)   KEYS[2] their revision (absent: 0)
-- ARGV[1] the revision the new settings were based on   ARGV[2] the new settings
if (tonumber(redis.call('GET', KEYS[2])) or 0) ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('INCR', KEYS[2])
return 1
