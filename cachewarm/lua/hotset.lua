-- HOTSET (one shard of a keyspace's hot set). KEYS: hot, epoch, seen (one slot: the shard's).
-- ARGV: threshold, half_life_ms, cold_factor.
-- Returns {now_ms, hot members...}; removes cold members (and their seen fields).
local hot_key, epoch_key, seen_key = KEYS[1], KEYS[2], KEYS[3]
local threshold, half_life_ms, cold_factor = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local epoch = tonumber(redis.call('GET', epoch_key) or '')
local out = {tostring(now)}
if epoch then
  local bound = threshold * math.pow(2, (now - epoch) / half_life_ms)
  local cold = redis.call('ZRANGEBYSCORE', hot_key, '-inf', '(' .. (bound / cold_factor), 'LIMIT', 0, 1000)
  if #cold > 0 then
    redis.call('ZREM', hot_key, unpack(cold))
    redis.call('HDEL', seen_key, unpack(cold))
  end
  for _, k in ipairs(redis.call('ZRANGEBYSCORE', hot_key, bound, '+inf')) do out[#out + 1] = k end
end
return out
