-- Compare-and-set of the runtime settings: stores ARGV[2] only if the stored
-- settings still equal ARGV[1] ('' when none were stored), field by field
-- (so formatting never matters). KEYS[1] the settings key.
local function same(a, b)
  for field, value in pairs(a) do
    if b[field] ~= value then
      return false
    end
  end
  for field in pairs(b) do
    if a[field] == nil then
      return false
    end
  end
  return true
end

local current = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if current then
    return 0
  end
elseif not current or not same(cjson.decode(current), cjson.decode(ARGV[1])) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
