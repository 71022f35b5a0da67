-- CLAIM (the scan). KEYS: claim keys.  ARGV: claim_ms.
-- Returns the indexes (into KEYS) of the claims this call took (SET NX PX).
local claim_ms = ARGV[1]
local out = {}
for i, claim_key in ipairs(KEYS) do
  if redis.call('SET', claim_key, '1', 'NX', 'PX', claim_ms) then out[#out + 1] = i end
end
return out
