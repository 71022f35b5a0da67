-- RECORD_GAP (a gap found outside CHECK_AND_READ). KEYS: gap hash.
-- ARGV: upper id, now_ms, consumer, force ('1': record it even if an answer covered upper).
-- Returns 1 recorded, 0 already answered.
local gap_key = KEYS[1]
local upper, now, consumer, force = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local answered = redis.call('HGET', gap_key, 'answered')
if force ~= '1' and answered and idcmp(upper, answered) <= 0 then return 0 end
local pending = redis.call('HGET', gap_key, 'pending')
if not pending or idcmp(upper, pending) > 0 then redis.call('HSET', gap_key, 'pending', upper) end
redis.call('HSET', gap_key, 'pending_at', now, 'pending_by', consumer)
return 1
