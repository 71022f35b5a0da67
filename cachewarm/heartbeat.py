"""Worker heartbeats: ``workers:<id>`` keys that live a few seconds and are renewed every second.

A refresh lease carries its worker's id (``w=<id>|<token>``); when that worker's heartbeat is gone (a kill -9,
an OOM kill) another worker may take the lease at once instead of waiting out its TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import redis
import redis.asyncio

from .keys import KeyLayout

TTL_MS = 3000
INTERVAL = 1.0


def worker_id() -> str:
    """This process's id: host and pid (a forked pool child gets its own)."""
    return f"{socket.gethostname()}.{os.getpid()}"


async def beat_forever(client: redis.asyncio.Redis, layout: KeyLayout, ident: str,
                       interval: float = INTERVAL) -> None:
    """Renews the heartbeat until cancelled; Redis errors are retried on the next beat."""
    key = layout.worker(ident)
    try:
        while True:
            with contextlib.suppress(redis.RedisError):
                await client.set(key, str(os.getpid()), px=TTL_MS)
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(redis.RedisError, RuntimeError):
            await client.delete(key)


def live_workers(client: redis.Redis, layout: KeyLayout) -> list[str]:
    """Ids of the workers whose heartbeat is current."""
    start = len(layout.worker(""))
    return sorted(k.decode()[start:] for k in client.scan_iter(match=layout.worker("*"), count=1000))
