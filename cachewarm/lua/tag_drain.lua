-- TAG_DRAIN (a tag invalidation, one batch of members). KEYS: tag set, (value, fence) per member.
-- ARGV: fence_ttl, batch, members (in the order of their KEYS pairs).
-- Removes each member from the set, bumps its fence and deletes its value.
-- Returns {members removed, up to batch members still in the set} (the next call's members; none: done).
local set_key = KEYS[1]
local fence_ttl, batch = ARGV[1], tonumber(ARGV[2])
local removed = 0
for i = 3, #ARGV do
  local value_key, fence_key = KEYS[2 * (i - 3) + 2], KEYS[2 * (i - 3) + 3]
  removed = removed + redis.call('SREM', set_key, ARGV[i])
  bump_fence(fence_key, fence_ttl)
  redis.call('DEL', value_key)
end
return {removed, redis.call('SRANDMEMBER', set_key, batch)}
