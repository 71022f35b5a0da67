"""A per-keyspace rate budget for source requests, shared by every worker: a token bucket in Redis.

The bucket (``rate:S``, a hash of tokens and the time they were counted) refills at `rate` tokens per second up to
`burst`. Taking a token is one script call; when none is left the script says how long until one is, and the
caller sleeps that long and asks again, so adding workers never raises the request rate above the budget.
"""

from __future__ import annotations

import asyncio

import redis.asyncio

from . import store

TAKE = """
-- KEYS: bucket   ARGV: rate (tokens/s), burst.   Returns 0 (took one) or milliseconds until one is available.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tokens = tonumber(redis.call('HGET', KEYS[1], 't') or ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[1], 'ts') or now)
tokens = math.min(burst, tokens + math.max(0, now - last) * rate / 1000)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
"""
take_script = store.LuaScript(TAKE)


async def acquire(client: redis.asyncio.Redis, bucket: str, rate: float, *, burst: float | None = None) -> float:
    """Waits for one token of the bucket; returns seconds waited. rate <= 0 means no limit."""
    if rate <= 0:
        return 0.0
    waited = 0.0
    size = burst if burst is not None else max(1.0, rate)
    while True:
        wait_ms = int(await take_script.run_async(client, [bucket], [repr(rate), repr(size)]))
        if wait_ms <= 0:
            return waited
        await asyncio.sleep(wait_ms / 1000)
        waited += wait_ms / 1000
