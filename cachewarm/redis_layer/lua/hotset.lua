-- HOTSET (one shard of a keyspace's hot set). KEYS: hot, epoch, seen (one slot: the shard's).
-- ARGV: threshold, half_life_ms, cold_factor.
-- Returns {now_ms, (hot member, its decayed read count)...}, hottest first (hot: is_hot, preamble.lua); removes cold members (and their seen
-- fields). Counts are strings (a Lua number would reach the client truncated to an integer).
local hot_key, epoch_key, seen_key = KEYS[1], KEYS[2], KEYS[3]
local threshold, half_life_ms, cold_factor = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local epoch = tonumber(redis.call('GET', epoch_key) or '')
local out = {tostring(now)}
if epoch then
  local scale = math.pow(2, (now - epoch) / half_life_ms)
  local bound = hot_bound(threshold, now, epoch, half_life_ms)
  local cold = redis.call('ZRANGEBYSCORE', hot_key, '-inf', '(' .. (bound / cold_factor), 'LIMIT', 0, 1000)
  if #cold > 0 then
    redis.call('ZREM', hot_key, unpack(cold))
    redis.call('HDEL', seen_key, unpack(cold))
  end
  -- is_hot: strictly above the bound ('(' excludes it), written exactly (%.17g) so the bound is the one computed
  local hot = redis.call('ZREVRANGEBYSCORE', hot_key, '+inf', string.format('(%.17g', bound), 'WITHSCORES')
  for i = 1, #hot, 2 do
    out[#out + 1] = hot[i]
    out[#out + 1] = string.format('%.6g', tonumber(hot[i + 1]) / scale)
  end
end
return out
