-- SEEN (a refresh's wasted check). KEYS: hot shard, seen shard (one slot: the shard's).  ARGV: cache key.
-- seen holds the key's hot score at its previous refresh; reads only ever add to a score, so an unchanged score
-- means nobody read the key in between: that refresh was wasted. Records the score now. Returns 1 wasted, else 0.
local hot_key, seen_key = KEYS[1], KEYS[2]
local member = ARGV[1]
local score = redis.call('ZSCORE', hot_key, member) or ''
local prev = redis.call('HGET', seen_key, member)
redis.call('HSET', seen_key, member, score)
if prev and prev == score then return 1 end
return 0
