-- FLUSH (the read counters of one process). KEYS: stats, then (hot, hot epoch) per keyspace.
-- ARGV: half_life_ms, rebase_half_lives, ncounters, (field, delta)*, (max_tracked, nkeys, (key, reads)*) per
--       keyspace, in the order of their KEYS pairs.
-- Adds the counters; adds each key's reads, forward-decayed, to its keyspace's hot zset (rescaled once the epoch
-- is rebase_half_lives half-lives old) and trims the zset to max_tracked. Returns 1.
local stats_key = KEYS[1]
local half, rebase = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  redis.call('HINCRBYFLOAT', stats_key, ARGV[i], ARGV[i + 1])
  i = i + 2
end
for k = 2, #KEYS, 2 do
  local hot_key, epoch_key = KEYS[k], KEYS[k + 1]
  local limit, nkeys = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  i = i + 2
  local epoch = tonumber(redis.call('GET', epoch_key))
  if not epoch then
    epoch = now
    redis.call('SET', epoch_key, now)
  elseif (now - epoch) / half > rebase then
    local shift = math.floor((now - epoch) / half)
    redis.call('ZUNIONSTORE', hot_key, 1, hot_key, 'WEIGHTS', math.pow(2, -shift))
    epoch = epoch + shift * half
    redis.call('SET', epoch_key, epoch)
  end
  local weight = math.pow(2, (now - epoch) / half)
  for _ = 1, nkeys do
    redis.call('ZINCRBY', hot_key, weight * tonumber(ARGV[i + 1]), ARGV[i])
    i = i + 2
  end
  local over = redis.call('ZCARD', hot_key) - limit
  if over > 0 then redis.call('ZPOPMIN', hot_key, over) end
end
return 1
