-- LEASE (a refresh, before its fetch). KEYS: value, lease, fence, seen, hot, tag gens (ntags),
--   [the heartbeat key of the worker named by ARGV[6]].
-- ARGV: lease token, lease px, ntags, ahead_ms ('' = due anyway), cache key, suspected owner ('' = none).
-- Skips a key no longer due; takes the lease (taking over a lease whose owner is the suspected owner and whose
-- heartbeat key is gone); takes the fence token; counts wasted refreshes (seen:S holds the hot score of the last).
-- Returns {2} not due; {3, owner|false} held by someone else (owner: a worker id, to name as suspect next time);
-- {1, fence token, late, wasted, had_value} taken.
local value_key, lease_key, fence_key, seen_key, hot_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local token, px, ntags, ahead, member, suspect = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
local heartbeat_key = KEYS[6 + ntags]
local now = now_ms()
local expires = tonumber(redis.call('GETRANGE', value_key, 0, 12))
if ahead ~= '' and expires and expires - now >= tonumber(ahead) then return {2} end
if not redis.call('SET', lease_key, token, 'NX', 'PX', px) then
  local owner = string.match(redis.call('GET', lease_key) or '', '^w=([^|]+)|')
  if not owner then return {3, false} end
  if owner ~= suspect or not heartbeat_key or redis.call('EXISTS', heartbeat_key) == 1 then return {3, owner} end
  redis.call('SET', lease_key, token, 'PX', px)
end
local late = 0
if not expires or expires <= now then late = 1 end
local score = redis.call('ZSCORE', hot_key, member) or ''
local prev = redis.call('HGET', seen_key, member)
local wasted = 0
if prev and prev == score then wasted = 1 end
redis.call('HSET', seen_key, member, score)
return {1, fence_token(fence_key, 6, ntags), late, wasted, expires and 1 or 0}
