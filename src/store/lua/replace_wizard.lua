-- Compare-and-set of one wizard step, with what the step settles.
-- KEYS[1] wizard key
-- ARGV[1] expected version   ARGV[2] new body   ARGV[3] bound user id ('' for none)
-- ARGV[4] purge time (ms)    ARGV[5] step name  ARGV[6] expiry (ms)
-- ARGV[7] key prefix         ARGV[8] attempts counter to clear ('' for none)
-- ARGV[9] user whose TOTP step to record ('' for none)   ARGV[10] that TOTP step
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then
  return 'lost'
end
if ARGV[9] ~= '' then
  local last_key = ARGV[7] .. 'totp-step:' .. ARGV[9]
  local last = tonumber(redis.call('GET', last_key))
  if last and last >= tonumber(ARGV[10]) then
    return 'replayed'
  end
  -- Older steps fall out of the ±1 step window within 90 s; keep a margin.
  redis.call('SET', last_key, ARGV[10], 'EX', 600)
end
if ARGV[8] ~= '' then
  redis.call('DEL', ARGV[7] .. 'attempts:' .. ARGV[8])
end
redis.call('HSET', KEYS[1], 'v', tostring(tonumber(ARGV[1]) + 1), 'body', ARGV[2], 'step', ARGV[5], 'exp', ARGV[6])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'user', ARGV[3])
end
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 'done'
