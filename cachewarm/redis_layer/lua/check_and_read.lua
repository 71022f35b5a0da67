-- CHECK_AND_READ (the invalidation consumer's read of new entries, with the stream gap check; see gap.py).
-- KEYS: stream, gap hash.  ARGV: group, consumer, count, now_ms, ids to acknowledge (applied by the caller)...
-- Returns {upper id of a newly found gap or false, lost count (-1 unknown), last-generated id, XREADGROUP reply}.
local stream_key, gap_key = KEYS[1], KEYS[2]
local group, consumer, count, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ok, sinfo = pcall(redis.call, 'XINFO', 'STREAM', stream_key)
if not ok then return redis.error_reply('NOGROUP no stream ' .. stream_key) end
local s = kv(sinfo)
local g
for _, gi in ipairs(redis.call('XINFO', 'GROUPS', stream_key)) do
  local t = kv(gi)
  if t['name'] == group then g = t end
end
if not g then return redis.error_reply('NOGROUP no group ' .. group) end
if #ARGV > 4 then redis.call('XACK', stream_key, group, unpack(ARGV, 5)) end
local L = g['last-delivered-id']
local E = g['entries-read']
local A = s['entries-added']
local N = tonumber(s['length'])
local lastgen = s['last-generated-id']
local D = s['max-deleted-entry-id']
local upper, lost = nil, -1
if D and idcmp(D, L) > 0 then upper = D end
local first = s['first-entry']
if first then
  if idcmp(first[1], L) > 0 then
    if A and E then lost = A - E - N
    elseif A and L == '0-0' then lost = A - N end
    if lost ~= 0 then upper = idmax(upper, first[1]) end
  end
elseif idcmp(lastgen, L) > 0 then
  upper = idmax(upper, lastgen)
  if A and E then lost = A - E elseif A and L == '0-0' then lost = A end
end
if upper then
  local answered = redis.call('HGET', gap_key, 'answered')
  if answered and idcmp(upper, answered) <= 0 then
    upper = nil
  else
    local pending = redis.call('HGET', gap_key, 'pending')
    if not pending or idcmp(upper, pending) > 0 then redis.call('HSET', gap_key, 'pending', upper) end
    redis.call('HSET', gap_key, 'pending_at', now, 'pending_by', consumer)
  end
end
local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', stream_key, '>')
return {upper or false, lost, lastgen, read}
