-- DROP (answering a stream gap: one SCAN batch). KEYS: (value, fence) per cached value, then the fences of
--   loads in flight (their leases), then tag generations.
-- ARGV: fence_ttl, nvalues, nfences.
-- A value: fence bumped, value deleted. A load in flight: fence bumped. A tag generation: bumped (left alone
-- when the name holds something else than a string). Returns the indexes (1..nvalues) of the values deleted.
local fence_ttl, nvalues, nfences = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local dropped = {}
for v = 1, nvalues do
  local value_key, fence_key = KEYS[2 * v - 1], KEYS[2 * v]
  if redis.call('DEL', value_key) == 1 then dropped[#dropped + 1] = v end
  bump_fence(fence_key, fence_ttl)
end
for i = 2 * nvalues + 1, 2 * nvalues + nfences do bump_fence(KEYS[i], fence_ttl) end
for i = 2 * nvalues + nfences + 1, #KEYS do
  local gen_key = KEYS[i]
  if redis.call('TYPE', gen_key)['ok'] == 'string' or redis.call('EXISTS', gen_key) == 0 then
    redis.call('INCR', gen_key)
    redis.call('EXPIRE', gen_key, fence_ttl)
  end
end
return dropped
