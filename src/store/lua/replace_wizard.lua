-- Compare-and-set of one wizard step, with what the step settles.
-- KEYS[1] wizard key
-- ARGV[1] expected version   ARGV[2] new body   ARGV[3] bound user id ('' for none)
-- ARGV[4] purge time (ms)    ARGV[5] step name  ARGV[6] expiry (ms)
-- ARGV[7] key prefix
-- ARGV[8] what to do with the attempts counter: 'clear', 'refund' or '' (keep)
-- ARGV[9] that counter's name
-- ARGV[10] user whose TOTP step to record ('' for none)   ARGV[11] that TOTP step
-- ARGV[12] for 'refund': start of the attempt's window (ms); nothing is given
--          back once the counter has moved to another window (Counter::refund)
-- ARGV[13] user that must still exist ('' for none)   ARGV[14] at this credentials version
-- Every precondition is checked before anything is written.
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then
  return 'lost'
end
if ARGV[13] ~= '' then
  local user = redis.call('GET', ARGV[7] .. 'user:' .. ARGV[13])
  if not user or (tonumber(cjson.decode(user)['credentials_version']) or 0) ~= tonumber(ARGV[14]) then
    return 'lost'
  end
end
if ARGV[10] ~= '' then
  local last_key = ARGV[7] .. 'totp-step:' .. ARGV[10]
  local last = tonumber(redis.call('GET', last_key))
  if last and last >= tonumber(ARGV[11]) then
    return 'replayed'
  end
  -- Older steps fall out of the ±1 step window within 90 s; keep a margin.
  redis.call('SET', last_key, ARGV[11], 'EX', 600)
end
local counter = ARGV[7] .. 'attempts:' .. ARGV[9]
if ARGV[8] == 'clear' then
  redis.call('DEL', counter)
elseif ARGV[8] == 'refund' then
  local c = redis.call('HMGET', counter, 'count', 'since')
  local count, since = tonumber(c[1]), tonumber(c[2])
  if count and count > 0 and since == tonumber(ARGV[12]) then
    redis.call('HINCRBY', counter, 'count', -1)
  end
end
redis.call('HSET', KEYS[1], 'v', tostring(tonumber(ARGV[1]) + 1), 'body', ARGV[2], 'step', ARGV[5], 'exp', ARGV[6])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'user', ARGV[3])
else
  -- Back at `login` (a rolled-back step): the email typed decides the user again.
  redis.call('HDEL', KEYS[1], 'user')
end
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 'done'
