-- TAG_MEMBERS (a tag invalidation's walk, one step). KEYS: tag set.  ARGV: cursor, count.
-- Returns {next cursor ('0': done), members...}: a ZSCAN step, so every member present for the whole walk is
-- returned at least once (the caller invalidates each one in its own slot: INVALIDATE_KEY).
local set_key = KEYS[1]
local cursor, count = ARGV[1], ARGV[2]
local reply = redis.call('ZSCAN', set_key, cursor, 'COUNT', count)
local out = {reply[1]}
for i = 1, #reply[2], 2 do out[#out + 1] = reply[2][i] end
return out
