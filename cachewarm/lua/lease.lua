-- LEASE (a refresh, before its fetch). KEYS: value, lease, fence (one slot: the key's).
-- ARGV: lease token, lease px, ahead_ms ('' = due anyway), suspected owner ('' = none), suspect gone ('1': its
--   heartbeat key was found missing just before this call), fence_keep_ms (how long a fence made here is kept).
-- Skips a key no longer due; takes the lease (taking over a lease whose owner is the suspected owner, found gone);
-- takes the fence token. A tagged key is enlisted in its tags' sets (ENLIST) before this call: see keys.py.
-- Returns {2} not due; {3, owner|false} held by someone else (owner: a worker id, to check and name as suspect
-- next time); {1, fence token, late, had_value} taken.
local value_key, lease_key, fence_key = KEYS[1], KEYS[2], KEYS[3]
local token, px, ahead, suspect, gone, keep = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local now = now_ms()
local expires = tonumber(redis.call('GETRANGE', value_key, 0, 12))
if ahead ~= '' and expires and expires - now >= tonumber(ahead) then return {2} end
if not redis.call('SET', lease_key, token, 'NX', 'PX', px) then
  local owner = string.match(redis.call('GET', lease_key) or '', '^w=([^|]+)|')
  if not owner then return {3, false} end
  if owner ~= suspect or gone ~= '1' then return {3, owner} end
  redis.call('SET', lease_key, token, 'PX', px)
end
local late = 0
if not expires or expires <= now then late = 1 end
return {1, take_fence_token(fence_key, keep), late, expires and 1 or 0}
