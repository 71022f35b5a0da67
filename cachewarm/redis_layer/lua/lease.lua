-- LEASE (a refresh, before its fetch), for one key or many. KEYS: value, lease, fence of each key (3 per key; on a
-- Redis Cluster the keys of one node per call: node_calls.py).
-- ARGV: lease px, ahead_ms ('' = due anyway), suspected owner ('' = none), suspect gone ('1': its heartbeat key was
--   found missing just before this call), fence_keep_ms (how long a fence made here is kept), then one lease token
--   per key.
-- Per key: skips it when no longer due; takes the lease (taking over a lease whose owner is the suspected owner,
-- found gone); takes the fence token. A tagged key is enlisted in its tags' sets (ENLIST) before this call: see
-- keys.py.
-- Returns one reply per key, in order: {2} not due; {3, owner|false} held by someone else (owner: a worker id, to
-- check and name as suspect next time); {1, fence token, late, had_value} taken (late: see below).
local px, ahead, suspect, gone, keep = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local now = now_ms()
local replies = {}
for i = 1, #KEYS / 3 do
  local value_key, lease_key, fence_key = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local token = ARGV[5 + i]
  local expires = tonumber(redis.call('GETRANGE', value_key, 0, 12))
  if ahead ~= '' and expires and expires - now >= tonumber(ahead) then
    replies[i] = {2}
  else
    local taken = redis.call('SET', lease_key, token, 'NX', 'PX', px)
    if not taken then
      local owner = string.match(redis.call('GET', lease_key) or '', '^w=([^|]+)|')
      if not owner then
        replies[i] = {3, false}
      elseif owner ~= suspect or gone ~= '1' then
        replies[i] = {3, owner}
      else
        redis.call('SET', lease_key, token, 'PX', px)
        taken = true
      end
    end
    if taken then
      -- Late: a refresh by the scan (not a forced one: `cachewarm warm`, an invalidated hot key) that finds the value
      -- expired, or missing while its fence says it was loaded or invalidated before. A key never loaded has no
      -- fence yet (take_fence_token makes it below): its first load is not late.
      local late = 0
      if ahead ~= '' then
        if expires then
          if expires <= now then late = 1 end
        elseif redis.call('EXISTS', fence_key) == 1 then
          late = 1
        end
      end
      replies[i] = {1, take_fence_token(fence_key, keep), late, expires and 1 or 0}
    end
  end
end
return replies
