-- INVALIDATE_KEY, for one key or many (a batch of key events; on a Redis Cluster one node's).
-- KEYS: value, fence of each key (2 per key).  ARGV: fence_ttl, then one version per key ('' = none).
-- Per key, in order: bumps the fence (fencing loads in flight), raises the version floor, deletes the value.
-- Returns one reply per key: {1, deleted} applied; {0, 0} stale (the cache already holds this version or newer);
-- of many keys, {-1, message} for a key whose commands failed (a fence that is not a hash, say), so that one
-- poisoned key does not fail the others; a single key's failure is the script's error.
local fence_ttl = ARGV[1]
local function invalidate(i)
  local value_key, fence_key = KEYS[2 * i - 1], KEYS[2 * i]
  local version = ARGV[1 + i]
  if version ~= '' then
    local ver = tonumber(version)
    local old = env_version(redis.call('GET', value_key))
    if old and old >= ver then return {0, 0} end
    local floor = tonumber(redis.call('HGET', fence_key, 'v') or '-1')
    if ver > floor then redis.call('HSET', fence_key, 'v', ver) end
  end
  bump_fence(fence_key, fence_ttl, version ~= '')
  return {1, redis.call('DEL', value_key)}
end
if #KEYS == 2 then return {invalidate(1)} end
local replies = {}
for i = 1, #KEYS / 2 do
  local ok, reply = pcall(invalidate, i)
  if ok then
    replies[i] = reply
  else
    replies[i] = {-1, type(reply) == 'table' and reply.err or tostring(reply)}
  end
end
return replies
