-- ENLIST (a tagged key, before its load reads its fence token, and again with its write). KEYS: tag set.
-- ARGV: cache key, keep_ms.
-- Keeps the key a member of the tag's zset for at least keep_ms (score: Redis ms until which it stays), drops
-- members whose time is up, and keeps the set itself as long as its longest-lived member. Returns 1.
local set_key = KEYS[1]
local member, keep = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', set_key, '-inf', '(' .. now)
redis.call('ZADD', set_key, 'GT', now + keep, member)
if redis.call('PTTL', set_key) < keep then redis.call('PEXPIRE', set_key, keep) end
return 1
