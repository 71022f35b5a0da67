-- REMOVE (the source said 404 during a refresh). KEYS: value, fence, lease, wake, waiters, hot, pin, seen,
--   tag gens (ntags).
-- ARGV: fence token, lease token, cache key, ntags.
-- Removes the key (value, hot/pin/seen membership) unless an invalidation came first (which already removed
-- it); frees the lease; wakes the waiters. Returns 1 removed, 0 fenced.
local value_key, fence_key, lease_key, wake_key, waiters_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local hot_key, pin_key, seen_key = KEYS[6], KEYS[7], KEYS[8]
local fence, lease_token, member, ntags = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local ok = fence_token(fence_key, 9, ntags) == fence
if ok then
  redis.call('DEL', value_key)
  redis.call('ZREM', hot_key, member)
  redis.call('SREM', pin_key, member)
  redis.call('HDEL', seen_key, member)
end
if redis.call('GET', lease_key) == lease_token then redis.call('DEL', lease_key) end
wake_waiters(wake_key, waiters_key, '0')
if ok then return 1 end
return 0
