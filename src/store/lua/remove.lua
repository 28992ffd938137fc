-- Delete a record (see insert.lua) if it is at the expected version,
-- leaving a marker so that this delete, retried, recognises itself.
-- KEYS[1] record, KEYS[2] this delete's marker; ARGV[1] expected version (8 bytes),
-- ARGV[2] how long to keep the marker (ms)
local stored = redis.call('GET', KEYS[1])
if not stored then
  return redis.call('EXISTS', KEYS[2])
end
if string.sub(stored, 1, 8) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 1
