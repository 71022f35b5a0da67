"""A source that answers something JSON cannot hold fails that key's refresh only; the batch and the old value stay.

Before, a Python source's value JSON cannot hold (a datetime) or an HTTP body with NaN (Python's parser takes it,
the envelope refuses it) raised out of the key's refresh and failed its whole batch (every other key's outcome
lost, the claims released without a count). Real redis-server, HTTP source on a socket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis

from cachewarm import Settings
from cachewarm.demo.source import SourceServer
from cachewarm.redis_layer import envelope
from cachewarm.redis_layer.keys import KeyLayout
from cachewarm.warming.context import RefreshContext
from cachewarm.warming.refresh import refresh_batch
from tests.support.refresh_context import refresh_context

L = KeyLayout()
pytestmark = pytest.mark.source(latency=0.0)


@pytest.fixture
def settings(source: SourceServer, write_config: Callable[[str], Path],
             make_settings: Callable[..., Settings]) -> Settings:
    config = write_config(f"""
        [keyspaces.product]
        pattern = "product:{{id}}"
        source = "{source.url}/products/{{id}}"
        ttl = 30

        [keyspaces.odd]
        pattern = "odd:{{id}}"
        source = "python:tests.support.sources_fixture:not_json"
        ttl = 30
    """)
    return make_settings(config, refresh_retries=0)


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[RefreshContext]:
    async with refresh_context(settings) as context:
        yield context


async def test_a_nan_body_fails_its_key_and_keeps_its_old_value(ctx: RefreshContext, source: SourceServer,
                                                                redis_client: redis.Redis) -> None:
    assert await refresh_batch(ctx, ["product:1", "product:2"], force=True) == {"ok": 2}
    old = envelope.decode(redis_client.get(L.value("product:1")) or b"")
    source.set_item(1, {"price": float("nan")})    # the demo source writes NaN into its JSON body
    counts = await refresh_batch(ctx, ["product:1", "product:2"], force=True)
    assert counts == {"ok": 1, "error": 1}
    assert envelope.decode(redis_client.get(L.value("product:1")) or b"").value == old.value
    assert not redis_client.exists(L.lease("product:1"))


async def test_a_value_json_cannot_hold_fails_its_key_only(ctx: RefreshContext, redis_client: redis.Redis) -> None:
    counts = await refresh_batch(ctx, ["odd:1", "product:3"])
    assert counts == {"error": 1, "ok": 1}
    assert redis_client.get(L.value("odd:1")) is None
    assert not redis_client.exists(L.lease("odd:1"))
    assert redis_client.get(L.value("product:3")) is not None
