-- A wizard record and, if asked, the codes tried in it (counting one more
-- first if asked; the count lives as long as the wizard). Shared by
-- read_wizard.lua and read_bound.lua.
local function read_wizard(wizard, tries, code)
  local record = redis.call('GET', wizard)
  if not record or code == '' then
    return record, false
  end
  if code == '1' then
    local n = redis.call('INCR', tries)
    local ttl = redis.call('PTTL', wizard)
    if ttl > 0 then
      redis.call('PEXPIRE', tries, ttl)
    end
    return record, n
  end
  return record, tonumber(redis.call('GET', tries)) or 0
end
