-- WRITE (a load, a refresh or a writer's set). KEYS: value, fence, lease, wake, waiters (one slot: the key's).
-- ARGV: expected fence token ('*': unfenced), envelope, px, lease token (''), version (''), fence_ttl,
--       bump ('1': a writer's set, which fences every load in flight of the key).
-- Stores the value only if the fence token is unchanged and the version does not go back; then frees the lease
-- and wakes the waiters. Returns 1 written, 0 rejected. (A tagged key is enlisted again by the caller, in the
-- same pipeline: ENLIST.)
local value_key, fence_key, lease_key, wake_key, waiters_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local expected, envelope, px, lease_token = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local version, fence_ttl, bump = ARGV[5], ARGV[6], ARGV[7]
if bump == '1' then bump_fence(fence_key, fence_ttl) end
local ok = expected == '*' or fence_token(fence_key) == expected
if ok and version ~= '' then
  local ver = tonumber(version)
  local floor = tonumber(redis.call('HGET', fence_key, 'v') or '-1')
  local old = env_version(redis.call('GET', value_key))
  if ver < floor or (old and old > ver) then
    ok = false
  elseif ver > floor then
    redis.call('HSET', fence_key, 'v', ver)
    redis.call('EXPIRE', fence_key, fence_ttl)
  end
end
if ok then redis.call('SET', value_key, envelope, 'PX', px) end
if lease_token ~= '' and redis.call('GET', lease_key) == lease_token then redis.call('DEL', lease_key) end
wake_waiters(wake_key, waiters_key, ok and '1' or '0')
if ok then return 1 end
return 0
