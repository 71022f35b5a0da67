-- GAP_ANSWERED. KEYS: gap hash (in the stream's slot).  ARGV: answered id.
-- Marks the gap answered (clearing a pending gap it covers). Returns 1. (The caller counts it in refresh:stats.)
local gap_key = KEYS[1]
local upper = ARGV[1]
local answered = redis.call('HGET', gap_key, 'answered')
if not answered or idcmp(upper, answered) > 0 then redis.call('HSET', gap_key, 'answered', upper) end
local pending = redis.call('HGET', gap_key, 'pending')
if pending and idcmp(pending, upper) <= 0 then redis.call('HDEL', gap_key, 'pending', 'pending_at', 'pending_by') end
return 1
