-- TAKE (the shared rate budget). KEYS: bucket.  ARGV: rate (tokens/s), burst.
-- Returns 0 (took one token) or the milliseconds until one is available.
local bucket_key = KEYS[1]
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local tokens = tonumber(redis.call('HGET', bucket_key, 't') or burst)
local last = tonumber(redis.call('HGET', bucket_key, 'ts') or now)
tokens = math.min(burst, tokens + math.max(0, now - last) * rate / 1000)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', bucket_key, 't', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', bucket_key, math.ceil(burst * 1000 / rate) + 1000)
return wait
