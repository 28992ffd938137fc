-- Set-if-newer of a step ("step:nonce"); retried: done if it is ours.
-- KEYS[1] step; ARGV[1] step, ARGV[2] nonce, ARGV[3] time to live (ms)
local wanted = ARGV[1] .. ':' .. ARGV[2]
local stored = redis.call('GET', KEYS[1])
if stored == wanted then
  return 1
end
if stored and tonumber(string.match(stored, '^(%d+):')) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], wanted, 'PX', ARGV[3])
return 1
