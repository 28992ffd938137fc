-- Reads a wizard and the user it concerns, and applies the step's gate to
-- the account's attempt counter, in one atomic round trip.
-- KEYS[1] wizard key
-- ARGV[1] key prefix        ARGV[2] email to look up ('' for none)
-- ARGV[3] digest of the wizard key presented ('' for none)   ARGV[4] key required (0/1)
-- ARGV[5] gate step ('' = no gate)   ARGV[6] take an attempt (0/1)   ARGV[7] code step (0/1)
-- ARGV[8] now (ms)   ARGV[9] max attempts   ARGV[10] window (ms)   ARGV[11] block (ms)
-- ARGV[12] codes per wizard
-- The gate mirrors Counter::admit in src/lockout.rs: keep the two in step.
local w = redis.call('HMGET', KEYS[1], 'v', 'body', 'user', 'step', 'exp', 'codes', 'kd')
if not w[1] then
  return false
end
-- A wizard the request cannot open is absent to it, before anything is counted.
-- (Digests of 128-bit random keys: a plain comparison reveals nothing useful.)
if (ARGV[3] ~= '' and ARGV[3] ~= w[7]) or (ARGV[3] == '' and ARGV[4] == '1') then
  return false
end
local prefix = ARGV[1]
local uid = w[3]
local counter = false
if uid then
  counter = 'user:' .. uid
elseif ARGV[2] ~= '' then
  uid = redis.call('GET', prefix .. 'email:' .. ARGV[2])
  counter = uid and ('user:' .. uid) or ('email:' .. ARGV[2])
end
local user = false
if uid then
  user = redis.call('GET', prefix .. 'user:' .. uid)
end

local function ms(n)
  return string.format('%.0f', n)
end

local function admit(key, now)
  local take, code = ARGV[6] == '1', ARGV[7] == '1'
  local max, window, block = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
  if code and (tonumber(w[6]) or 0) >= tonumber(ARGV[12]) then
    return 'closed', 0, 0
  end
  local c = redis.call('HMGET', key, 'count', 'since', 'until')
  local count, since, blocked = tonumber(c[1]) or 0, tonumber(c[2]), tonumber(c[3])
  if blocked and blocked > now then
    return 'blocked', blocked, 0
  end
  if not take then
    return 'admitted', 0, 0
  end
  -- A new window, or a block served: the account starts afresh.
  if not since or since + window <= now or blocked then
    count, since, blocked = 0, now, nil
    redis.call('HDEL', key, 'until')
  end
  if count >= max then
    blocked = now + block
    redis.call('HSET', key, 'count', count, 'since', ms(since), 'until', ms(blocked))
    redis.call('PEXPIRE', key, ms(math.max(since + window, blocked) - now))
    return 'blocked', blocked, 0
  end
  count = count + 1
  redis.call('HSET', key, 'count', count, 'since', ms(since))
  -- Relative: Redis expires keys by its own clock, which may differ from ours.
  redis.call('PEXPIRE', key, ms(math.max(since + window, blocked or 0) - now))
  if code then
    redis.call('HINCRBY', KEYS[1], 'codes', 1)
  end
  -- The window is returned with the attempt: a refund names it (Counter::refund).
  return 'admitted', count, since
end

local verdict, value, since = 'unchecked', 0, 0
local now = tonumber(ARGV[8])
if ARGV[5] ~= '' and counter and w[4] == ARGV[5] and now < tonumber(w[5]) then
  verdict, value, since = admit(prefix .. 'attempts:' .. counter, now)
end
return {w[1], w[2], user, verdict, ms(value), counter, ms(since)}
