-- HOT_MEMBERS (which of the keys an invalidation named are hot). KEYS: hot, epoch (one slot: the shard's).
-- ARGV: threshold, half_life_ms, then the cache keys (members of this shard) to judge.
-- Returns one 1 (hot) or 0 per key, in order: the rule HOTSET applies (is_hot, preamble.lua), on Redis's clock.
local hot_key, epoch_key = KEYS[1], KEYS[2]
local threshold, half_life_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local epoch = tonumber(redis.call('GET', epoch_key) or '')
local bound = epoch and hot_bound(threshold, now_ms(), epoch, half_life_ms)
local out = {}
for i = 3, #ARGV do
  local hot = bound and is_hot(tonumber(redis.call('ZSCORE', hot_key, ARGV[i]) or ''), bound)
  out[#out + 1] = hot and 1 or 0
end
return out
