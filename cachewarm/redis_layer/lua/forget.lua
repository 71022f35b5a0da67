-- FORGET (a key the source no longer has). KEYS: hot shard, seen shard (one slot: the shard's).  ARGV: cache key.
-- Drops its popularity and its last-refresh score. Returns 1.
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
