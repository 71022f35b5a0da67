-- REMOVE (the source said 404 during a refresh). KEYS: value, fence, lease, wake, waiters (one slot: the key's).
-- ARGV: fence token, lease token.
-- Removes the value unless an invalidation came first (which already removed it); frees the lease; wakes the
-- waiters. Returns 1 removed, 0 fenced. (The caller then drops the key's popularity: FORGET, and its pin.)
local value_key, fence_key, lease_key, wake_key, waiters_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local fence, lease_token = ARGV[1], ARGV[2]
local ok = fence_token(fence_key) == fence
if ok then redis.call('DEL', value_key) end
if redis.call('GET', lease_key) == lease_token then redis.call('DEL', lease_key) end
wake_waiters(wake_key, waiters_key, '0')
if ok then return 1 end
return 0
