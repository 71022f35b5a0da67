"""What a refresh tells its watcher (refresh.KeyWatch) and what the versioned fence lets it write, end to end.

The invalidation consumer's hot keys are refreshed through `refresh_batch(watch=...)`: the watcher (the sidecar's
HotRefresher) learns when each key's source request goes and whether its refresh wrote. A change committed and
invalidated (with its version) while the request is in flight is what the fetch returns (the source reads the item
when it answers), so the write passes the fence and no second refresh is needed; one invalidated without a version,
or with a version the fetch cannot have, is refused as before. Real redis-server, HTTP source on a socket.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis

from cachewarm import Settings
from cachewarm.demo.source import SourceServer
from cachewarm.redis_layer import envelope, script_calls, scripts
from cachewarm.redis_layer.keys import KeyLayout
from cachewarm.warming.context import RefreshContext
from cachewarm.warming.refresh import refresh_batch
from tests.support.refresh_context import refresh_context

L = KeyLayout()
pytestmark = pytest.mark.source(latency=0.3)


class Watch:
    """A refresh.KeyWatch that records what it is told."""

    def __init__(self) -> None:
        self.went = threading.Event()
        self.seen: list[tuple[str, str, bool | None]] = []

    def fetching(self, key: str) -> None:
        self.seen.append(("fetching", key, None))
        self.went.set()

    def done(self, key: str, written: bool) -> None:
        self.seen.append(("done", key, written))


@pytest.fixture
def settings(source: SourceServer, write_config: Callable[[str], Path],
             make_settings: Callable[..., Settings]) -> Settings:
    config = write_config(f"""
        [keyspaces.product]
        pattern = "product:{{id}}"
        source = "{source.url}/products/{{id}}"
        ttl = 30
        version_field = "version"
    """)
    return make_settings(config)


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[RefreshContext]:
    async with refresh_context(settings) as context:
        yield context


def _invalidate(client: redis.Redis, key: str, version: int | None) -> None:
    scripts.run(client, script_calls.invalidate_key(L, key=key, version=version, fence_ttl=600))


def _version(client: redis.Redis, key: str) -> int | None:
    raw = client.get(L.value(key))
    return None if raw is None else envelope.decode(raw).version


async def _refresh_while(ctx: RefreshContext, key: str,
                         during: Callable[[], None]) -> list[tuple[str, str, bool | None]]:
    """A forced refresh of `key`; `during` runs once its source request went (the source answers 0.3 s later)."""
    watch = Watch()
    task = asyncio.create_task(refresh_batch(ctx, [key], force=True, watch=watch))
    assert await asyncio.to_thread(watch.went.wait, 10)
    await asyncio.to_thread(during)
    await task
    return watch.seen


async def test_a_change_invalidated_during_the_fetch_is_written_by_it(
        ctx: RefreshContext, source: SourceServer, redis_client: redis.Redis) -> None:
    def commit_and_invalidate() -> None:
        item = source.bump(1)
        _invalidate(redis_client, "product:1", item["version"])

    seen = await _refresh_while(ctx, "product:1", commit_and_invalidate)
    assert seen == [("fetching", "product:1", None), ("done", "product:1", True)]
    assert _version(redis_client, "product:1") == source.bump(1)["version"] - 1  # the committed change


async def test_an_invalidation_without_a_version_during_the_fetch_refuses_it(
        ctx: RefreshContext, source: SourceServer, redis_client: redis.Redis) -> None:
    seen = await _refresh_while(ctx, "product:2", lambda: _invalidate(redis_client, "product:2", None))
    assert seen[-1] == ("done", "product:2", False)
    assert redis_client.get(L.value("product:2")) is None


async def test_an_invalidation_of_a_version_the_fetch_cannot_have_refuses_it(
        ctx: RefreshContext, source: SourceServer, redis_client: redis.Redis) -> None:
    seen = await _refresh_while(ctx, "product:3", lambda: _invalidate(redis_client, "product:3", 10**6))
    assert seen[-1] == ("done", "product:3", False)
    assert redis_client.get(L.value("product:3")) is None
