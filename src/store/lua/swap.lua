-- Compare-and-set of a record (see insert.lua); the key keeps its time to live.
-- KEYS[1] record; ARGV[1] expected version (8 bytes), ARGV[2] the new record
local stored = redis.call('GET', KEYS[1])
if not stored then
  return 0
end
if string.sub(stored, 1, 16) == string.sub(ARGV[2], 1, 16) then
  return 1 -- this very write, retried after a dropped connection
end
if string.sub(stored, 1, 8) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
