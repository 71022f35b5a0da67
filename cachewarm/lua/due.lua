-- DUE (the scan). KEYS: the candidates' value keys.  ARGV: ahead_ms.
-- Returns {now, (index into KEYS, refresh_at)*} for the due keys (refresh_at 0: missing).
local ahead = tonumber(ARGV[1])
local now = now_ms()
local out = {now}
for i, value_key in ipairs(KEYS) do
  local head = redis.call('GETRANGE', value_key, 0, 12)
  if head == '' then
    out[#out + 1] = i; out[#out + 1] = 0
  else
    local at = tonumber(head) - ahead
    if at <= now then out[#out + 1] = i; out[#out + 1] = at end
  end
end
return out
