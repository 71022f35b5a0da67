-- DUE (the scan). KEYS: each candidate's value key and claim key (2 per candidate; one slot: the key's).
-- ARGV: ahead_ms.
-- Returns {now, claimed, oldest, (index of a candidate, refresh_at)*}: the due keys not claimed yet (refresh_at 0:
-- missing); of the due keys already claimed (queued or being refreshed: the scan has nothing to do with them) only
-- how many and the oldest refresh_at among them (0: none, or all missing).
local ahead = tonumber(ARGV[1])
local now = now_ms()
local out = {now, 0, 0}
for i = 1, #KEYS / 2 do
  local value_key, claim_key = KEYS[2 * i - 1], KEYS[2 * i]
  local head = redis.call('GETRANGE', value_key, 0, 12)
  local at = 0
  local due = head == ''
  if not due then
    at = tonumber(head) - ahead
    due = at <= now
  end
  if due then
    if redis.call('EXISTS', claim_key) == 1 then
      out[2] = out[2] + 1
      if at > 0 and (out[3] == 0 or at < out[3]) then out[3] = at end
    else
      out[#out + 1] = i; out[#out + 1] = at
    end
  end
end
return out
