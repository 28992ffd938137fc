-- What a step reads of an account, in its hash slot: the user record, the
-- attempt counter (a fixed window gated by a block, taking one attempt if
-- asked) and, if asked, the last TOTP step. Shared by read_account.lua and
-- read_bound.lua.
local function read_account(user, counter, block, step, now, window, count, totp)
  local record = redis.call('GET', user)
  local taken
  local blocked = tonumber(redis.call('GET', block))
  if blocked and blocked > now then
    taken = {'blocked', blocked, 0}
  elseif count ~= '1' then
    taken = {'open', 0, 0}
  else
    local c = redis.call('HMGET', counter, 'n', 's')
    local n, since = tonumber(c[1]) or 0, tonumber(c[2])
    if not since or since + window <= now then
      n, since = 0, now
    end
    n = n + 1
    local since_ms = string.format('%.0f', since)
    redis.call('HSET', counter, 'n', n, 's', since_ms)
    -- Relative: Redis expires keys by its own clock, which may differ from ours.
    redis.call('PEXPIRE', counter, string.format('%.0f', since + window - now))
    taken = {'counted', n, since_ms}
  end
  local last = false
  if totp == '1' then
    last = redis.call('GET', step)
  end
  return {record, taken, last}
end
