-- INVALIDATE_KEY. KEYS: value, fence.  ARGV: version (''), fence_ttl.
-- Bumps the fence (fencing loads in flight), raises the version floor, deletes the value.
-- Returns {1, deleted} applied; {0, 0} stale (the cache already holds this version or a newer one).
local value_key, fence_key = KEYS[1], KEYS[2]
local version, fence_ttl = ARGV[1], ARGV[2]
if version ~= '' then
  local ver = tonumber(version)
  local old = env_version(redis.call('GET', value_key))
  if old and old >= ver then return {0, 0} end
  local floor = tonumber(redis.call('HGET', fence_key, 'v') or '-1')
  if ver > floor then redis.call('HSET', fence_key, 'v', ver) end
end
bump_fence(fence_key, fence_ttl)
return {1, redis.call('DEL', value_key)}
