-- GAP_ANSWERED. KEYS: gap hash, refresh stats.  ARGV: answered id, keys dropped.
-- Marks the gap answered (clearing a pending gap it covers) and counts it. Returns 1.
local gap_key, stats_key = KEYS[1], KEYS[2]
local upper, dropped = ARGV[1], ARGV[2]
local answered = redis.call('HGET', gap_key, 'answered')
if not answered or idcmp(upper, answered) > 0 then redis.call('HSET', gap_key, 'answered', upper) end
local pending = redis.call('HGET', gap_key, 'pending')
if pending and idcmp(pending, upper) <= 0 then redis.call('HDEL', gap_key, 'pending', 'pending_at', 'pending_by') end
redis.call('HINCRBY', stats_key, 'invalidation_gaps', 1)
redis.call('HINCRBY', stats_key, 'invalidation_gap_keys', dropped)
return 1
