-- FLUSH (one process's reads of one hot-set shard). KEYS: hot, epoch (one slot: the shard's).
-- ARGV: half_life_ms, rebase_half_lives, max_tracked, (key, reads)*.
-- Adds each key's reads, forward-decayed, to the shard's zset (rescaled once the epoch is rebase_half_lives
-- half-lives old) and trims the zset to max_tracked. Returns 1. (The read counters go to `stats` as plain
-- HINCRBYFLOATs in the same pipeline.)
local hot_key, epoch_key = KEYS[1], KEYS[2]
local half, rebase, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
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
for i = 4, #ARGV, 2 do
  redis.call('ZINCRBY', hot_key, weight * tonumber(ARGV[i + 1]), ARGV[i])
end
local over = redis.call('ZCARD', hot_key) - limit
if over > 0 then redis.call('ZPOPMIN', hot_key, over) end
return 1
