"""A per-keyspace rate budget for source requests, shared by every worker: a token bucket in Redis.

The bucket (``rate:S``, a hash of tokens and the time they were counted) refills at `rate` tokens per second up to
`burst`. Taking a token is one script call (lua/take.lua); when none is left the script says how long until one
is, and the caller sleeps that long and asks again, so adding workers never raises the request rate above the
budget.
"""

from __future__ import annotations

import asyncio

import redis.asyncio

from ..redis_layer import script_calls, scripts


async def acquire(client: redis.asyncio.Redis, bucket: str, rate: float, *, burst: float | None = None) -> float:
    """Waits for one token of the bucket; returns seconds waited. rate <= 0 means no limit."""
    if rate <= 0:
        return 0.0
    waited = 0.0
    size = burst if burst is not None else max(1.0, rate)
    while True:
        wait_ms = await scripts.arun(client, script_calls.take(bucket=bucket, rate=rate, burst=size))
        if wait_ms <= 0:
            return waited
        await asyncio.sleep(wait_ms / 1000)
        waited += wait_ms / 1000
