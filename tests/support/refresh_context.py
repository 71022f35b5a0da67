"""A refresh.RefreshContext over real clients for tests that drive refresh_batch directly."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from cachewarm import Settings
from cachewarm.redis_layer.connections import async_client
from cachewarm.warming.refresh import RefreshContext
from cachewarm.warming.refresh_engine import make_http_client


@contextlib.asynccontextmanager
async def refresh_context(settings: Settings, worker_id: str = "test-worker") -> AsyncIterator[RefreshContext]:
    """What a worker's refresh engine holds (async Redis client, the aiohttp pool), closed at the end."""
    context = RefreshContext(settings, async_client(settings.redis_url, timeout=5), make_http_client(settings),
                             worker_id)
    try:
        yield context
    finally:
        await context.http.aclose()
        await context.redis.aclose()
