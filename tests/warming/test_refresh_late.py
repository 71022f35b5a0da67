"""What counts as a late refresh (``late:S``, cachewarm_refresh_late_total): a value the scan's refresh found
expired, or gone after an earlier load or invalidation; never a key's first load, nor a forced refresh."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis

from cachewarm import Cache, Settings, publish_invalidation
from cachewarm.redis_layer import envelope
from cachewarm.redis_layer.keys import KeyLayout
from cachewarm.warming.context import RefreshContext
from cachewarm.warming.refresh import refresh_batch, stats
from tests.support.redis_cluster import topologies
from tests.support.refresh_context import refresh_context

L = KeyLayout()


@pytest.fixture
def settings(write_config: Callable[[str], Path], make_settings: Callable[..., Settings]) -> Settings:
    config = write_config("""
        [keyspaces.product]
        pattern = "product:{id}"
        source = "python:tests.cli.test_inspect_cli:product"
        ttl = 30
        refresh_ahead = 10
        max_stale = 60
    """)
    return make_settings(config)


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[RefreshContext]:
    async with refresh_context(settings) as context:
        yield context


def _late(client: redis.Redis) -> int:
    return int(stats(client, L).get("late:product", 0))


@topologies
async def test_first_loads_and_forced_refreshes_are_not_late(ctx: RefreshContext, redis_client: redis.Redis,
                                                             settings: Settings) -> None:
    assert await refresh_batch(ctx, ["product:1"]) == {"ok": 1}  # the scan's first load of a never-loaded key
    assert await refresh_batch(ctx, ["product:2"], force=True) == {"ok": 1}  # `cachewarm warm`
    publish_invalidation("product:2", redis=redis_client, settings=settings)
    redis_client.delete(L.value("product:2"))  # as the consumer does; its hot refresh is forced
    assert await refresh_batch(ctx, ["product:2"], force=True) == {"ok": 1}
    assert _late(redis_client) == 0


@topologies
async def test_expired_or_gone_after_a_load_is_late(ctx: RefreshContext, redis_client: redis.Redis,
                                                    settings: Settings) -> None:
    cache = Cache(settings=settings)
    try:
        cache.get("product:1")
        cache.get("product:2")
    finally:
        cache.close()
    now = int(time.time() * 1000)
    stale = envelope.encode('{"id":"1"}', fetched_ms=now - 40_000, ttl_ms=30_000)  # expired 10 s ago
    redis_client.set(L.value("product:1"), stale, px=50_000)
    redis_client.delete(L.value("product:2"))  # gone (evicted, or max_stale 0), its fence still there
    assert await refresh_batch(ctx, ["product:1", "product:2"]) == {"ok": 2}
    assert _late(redis_client) == 2
