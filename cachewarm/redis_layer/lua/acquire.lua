-- ACQUIRE (a read that missed). KEYS: value, lease, waiters, fence (one slot: the key's).
-- ARGV: lease token, lease_ms, fence_keep_ms (how long a fence made here is kept).
-- Returns {1, value} a fresh value (another loader just wrote it); {0, value|false, fence token} you hold the
-- lease: load; {2, value|false, lease pttl} another loader holds it: wait on the wake list.
-- A tagged key is enlisted in its tags' sets (ENLIST) before this call: see keys.py.
local value_key, lease_key, waiters_key, fence_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token, lease_ms, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('GET', value_key)
if v and tonumber(string.sub(v, 1, 13)) > now_ms() then return {1, v} end
if redis.call('SET', lease_key, token, 'NX', 'PX', lease_ms) then
  return {0, v or false, take_fence_token(fence_key, keep)}
end
redis.call('INCR', waiters_key)
redis.call('PEXPIRE', waiters_key, lease_ms * 2)
return {2, v or false, redis.call('PTTL', lease_key)}
