-- TAG_BUMP (first step of a tag invalidation). KEYS: tag gen, tag set.  ARGV: fence_ttl, batch.
-- Bumps the tag's generation, which fences every load in flight of every key carrying the tag.
-- Returns {generation, up to batch members of the tag set} (the members TAG_DRAIN is to invalidate first).
local gen_key, set_key = KEYS[1], KEYS[2]
local fence_ttl, batch = ARGV[1], tonumber(ARGV[2])
local g = redis.call('INCR', gen_key)
redis.call('EXPIRE', gen_key, fence_ttl)
return {g, redis.call('SRANDMEMBER', set_key, batch)}
