-- UNLOCK (the scan lock). KEYS: lock.  ARGV: token.  Deletes the lock if still ours; returns 1 deleted, else 0.
local lock_key = KEYS[1]
local token = ARGV[1]
if redis.call('GET', lock_key) == token then return redis.call('DEL', lock_key) end
return 0
