-- Delete a record (see insert.lua) if it is at the expected version; one
-- already gone counts as deleted (this delete, retried).
-- KEYS[1] record; ARGV[1] expected version (8 bytes)
local stored = redis.call('GET', KEYS[1])
if stored and string.sub(stored, 1, 8) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
