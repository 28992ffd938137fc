-- KEYS[1] user key; KEYS[2] email key; ARGV[1] user id; ARGV[2] user JSON.
-- Claims the email first so two users can never share one.
if redis.call('SET', KEYS[2], ARGV[1], 'NX') == false then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
