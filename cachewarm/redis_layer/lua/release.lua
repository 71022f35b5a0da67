-- RELEASE (a loader that failed). KEYS: lease, wake, waiters.  ARGV: lease token.
-- Frees the lease if still ours and wakes the waiters with '0' (load again). Returns 1.
local lease_key, wake_key, waiters_key = KEYS[1], KEYS[2], KEYS[3]
local token = ARGV[1]
if redis.call('GET', lease_key) == token then redis.call('DEL', lease_key) end
wake_waiters(wake_key, waiters_key, '0')
return 1
