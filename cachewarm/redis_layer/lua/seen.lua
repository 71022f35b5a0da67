-- SEEN (a refresh's wasted check), for one key or many. KEYS: hot shard, seen shard of each key (2 per key; one
-- slot per pair: the shard's; on a Redis Cluster one node's pairs).  ARGV: the cache key of each pair.
-- seen holds the key's hot score at its previous refresh; reads only ever add to a score, so an unchanged score
-- means nobody read the key in between: that refresh was wasted. Records the score now. Returns one reply per key,
-- in order: 1 wasted, else 0.
local replies = {}
for i, member in ipairs(ARGV) do
  local hot_key, seen_key = KEYS[2 * i - 1], KEYS[2 * i]
  local score = redis.call('ZSCORE', hot_key, member) or ''
  local prev = redis.call('HGET', seen_key, member)
  redis.call('HSET', seen_key, member, score)
  replies[i] = (prev and prev == score) and 1 or 0
end
return replies
