-- Compare-and-set of one wizard step, with what the step settles.
-- KEYS[1] wizard key
-- ARGV[1] expected version   ARGV[2] new body   ARGV[3] bound user id ('' for none)
-- ARGV[4] step name          ARGV[5] expiry (ms)
-- ARGV[6] key prefix
-- ARGV[7] what to do with the attempts counter: 'clear', 'refund' or '' (keep)
-- ARGV[8] that counter's name
-- ARGV[9] user whose TOTP step to record ('' for none)   ARGV[10] that TOTP step
-- ARGV[11] for 'refund': start of the attempt's window (ms); nothing is given
--          back once the counter has moved to another window (Counter::refund)
-- ARGV[12] user that must still exist ('' for none)   ARGV[13] at this credentials version
-- Every precondition is checked before anything is written. The key keeps the
-- time to live it got when the wizard started (HSET leaves it alone).
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then
  return 'lost'
end
if ARGV[12] ~= '' then
  local user = redis.call('GET', ARGV[6] .. 'user:' .. ARGV[12])
  if not user or (tonumber(cjson.decode(user)['credentials_version']) or 0) ~= tonumber(ARGV[13]) then
    return 'lost'
  end
end
if ARGV[9] ~= '' then
  local last_key = ARGV[6] .. 'totp-step:' .. ARGV[9]
  local last = tonumber(redis.call('GET', last_key))
  if last and last >= tonumber(ARGV[10]) then
    return 'replayed'
  end
  -- Older steps fall out of the ±1 step window within 90 s; keep a margin.
  redis.call('SET', last_key, ARGV[10], 'EX', 600)
end
local counter = ARGV[6] .. 'attempts:' .. ARGV[8]
if ARGV[7] == 'clear' then
  redis.call('DEL', counter)
elseif ARGV[7] == 'refund' then
  local c = redis.call('HMGET', counter, 'count', 'since')
  local count, since = tonumber(c[1]), tonumber(c[2])
  if count and count > 0 and since == tonumber(ARGV[11]) then
    redis.call('HINCRBY', counter, 'count', -1)
  end
end
redis.call('HSET', KEYS[1], 'v', tostring(tonumber(ARGV[1]) + 1), 'body', ARGV[2], 'step', ARGV[4], 'exp', ARGV[5])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'user', ARGV[3])
else
  -- Back at `login` (a rolled-back step): the email typed decides the user again.
  redis.call('HDEL', KEYS[1], 'user')
end
return 'done'
