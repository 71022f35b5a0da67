-- WRITE (a load, a refresh or a writer's set), for one key or many. KEYS: value, fence, lease, wake, waiters of
-- each key (5 per key; on a Redis Cluster those of one node per call: node_calls.py).
-- ARGV: fence_ttl, bump ('1': a writer's set, which fences every load in flight of the key), then 5 per key:
--       expected fence token ('*': unfenced), envelope, px, lease token (''), version ('').
-- Per key: stores the value only if the fence token is unchanged (or, for a versioned value, every invalidation since
-- the token named a version no newer than the value's: `covered`) and the version does not go back; then frees the
-- lease and wakes the waiters. Returns one reply per key, in order: 1 written, 0 rejected. (A tagged key is enlisted
-- again by the caller, in the same pipeline: ENLIST.) A refresh's write also records itself in the fence (field r).
local fence_ttl, bump = ARGV[1], ARGV[2]
local replies = {}
for i = 1, #KEYS / 5 do
  local value_key, fence_key, lease_key = KEYS[5 * i - 4], KEYS[5 * i - 3], KEYS[5 * i - 2]
  local wake_key, waiters_key = KEYS[5 * i - 1], KEYS[5 * i]
  local a = 5 * i - 2
  local expected, envelope, px, lease_token, version = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3],
    ARGV[a + 4]
  if bump == '1' then bump_fence(fence_key, fence_ttl, version ~= '') end
  local ok = expected == '*' or fence_token(fence_key) == expected
  if not ok and version ~= '' and bump ~= '1' then ok = covered(fence_key, expected, tonumber(version)) end
  if ok and version ~= '' then
    local ver = tonumber(version)
    local floor = tonumber(redis.call('HGET', fence_key, 'v') or '-1')
    local old = env_version(redis.call('GET', value_key))
    if ver < floor or (old and old > ver) then
      ok = false
    elseif ver > floor then
      redis.call('HSET', fence_key, 'v', ver)
      redis.call('EXPIRE', fence_key, fence_ttl)
    end
  end
  if ok then
    redis.call('SET', value_key, envelope, 'PX', px)
    -- A refresh's write (its lease token names its worker: 'w=<id>|...') records who refreshed and the fetch time
    -- in the fence, for `cachewarm inspect`: a field of a hash this script already writes, no round trip more.
    local worker = string.match(lease_token, '^w=([^|]+)|')
    if worker and redis.call('EXISTS', fence_key) == 1 then
      redis.call('HSET', fence_key, 'r', string.sub(envelope, 15, 27) .. '|' .. worker)
    end
  end
  if lease_token ~= '' and redis.call('GET', lease_key) == lease_token then redis.call('DEL', lease_key) end
  wake_waiters(wake_key, waiters_key, ok and '1' or '0')
  replies[i] = ok and 1 or 0
end
return replies
