"""A warming.context.RefreshContext over real clients for tests that drive refresh_batch directly."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from cachewarm import Settings
from cachewarm.warming.context import RefreshContext


@contextlib.asynccontextmanager
async def refresh_context(settings: Settings, worker_id: str = "test-worker") -> AsyncIterator[RefreshContext]:
    """What a worker's refresh engine holds (async Redis client, the aiohttp pool), closed at the end."""
    context = RefreshContext.open(settings, worker_id, timeout=5)
    try:
        yield context
    finally:
        await context.aclose()
