"""Both clients against a real redis-server through the async interface, on an event loop.

Each test runs for AsyncCache and for Cache (behind AsyncCache's interface, tests/support/clients.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from cachewarm import AsyncCache, CacheUnavailable, ConfigError, Settings, UnknownKeyspace
from cachewarm.demo.redis_server import free_port
from tests.support import sources_fixture
from tests.support.clients import FLAVOURS, awaitable_client

KEYSPACES = """
[keyspaces.item]
pattern = "item:{id}"
source = "python:tests.support.sources_fixture:counted"
ttl = 60
tags = ["items"]

[keyspaces.aprice]
pattern = "aprice:{id}"
source = "python:tests.support.sources_fixture:aprice"
ttl = 60
"""


@pytest.fixture(params=FLAVOURS)
def client_class(request: pytest.FixtureRequest) -> Any:
    return awaitable_client(request.param)


@pytest.fixture
async def cache(client_class: Any, make_settings: Callable[..., Settings],
                write_config: Callable[[str], Path]) -> AsyncIterator[AsyncCache]:
    sources_fixture.counter.clear()
    async with client_class(settings=make_settings(write_config(KEYSPACES))) as c:
        yield c


async def test_get_and_lookup(cache: AsyncCache) -> None:
    first = await cache.lookup("item:1")
    assert (first.value, first.hit, first.age) == ({"id": "1", "n": 1}, False, 0.0)
    await asyncio.sleep(0.02)
    second = await cache.lookup("item:1")
    assert second.hit and second.value == first.value and second.age > 0
    assert await cache.get("item:1") == {"id": "1", "n": 1}
    assert await cache.get("aprice:5") == {"id": "5", "async": True}
    assert sources_fixture.counter == {"1": 1}


async def test_unknown_keyspace(cache: AsyncCache) -> None:
    with pytest.raises(UnknownKeyspace):
        await cache.get("order:1")
    with pytest.raises(UnknownKeyspace):
        await cache.set("order:1", 1)
    assert await cache.set("order:1", 1, ttl=5)


async def test_set_exists_delete(cache: AsyncCache, redis_client: redis.Redis) -> None:
    assert not await cache.exists("item:2")
    assert await cache.set("item:2", {"w": 1}, ttl=20)
    assert await cache.exists("item:2")
    assert await cache.get("item:2") == {"w": 1}
    assert 15_000 < redis_client.pttl(cache.layout.value("item:2")) <= 20_000
    assert await cache.delete("item:2") is True
    assert await cache.delete("item:2") is False
    assert not await cache.exists("item:2")
    assert await cache.get("item:2") == {"id": "2", "n": 1}


async def test_clear_and_tags(cache: AsyncCache, redis_client: redis.Redis) -> None:
    for i in range(12):
        await cache.get(f"item:{i}")
    await cache.set("other:1", 1, ttl=60)
    assert await cache.clear("item:1") == 3  # item:1, item:10, item:11
    assert not await cache.exists("item:10")
    assert await cache.exists("item:2")
    assert "cmdstat_keys" not in redis_client.info("commandstats")
    assert await cache.invalidate_tag("items") >= 9
    assert not any([await cache.exists(f"item:{i}") for i in range(12)])
    assert await cache.exists("other:1")
    assert await cache.clear() == 1


async def test_cached_decorator(cache: AsyncCache) -> None:
    calls: list[int] = []

    @cache.cached("square:{x}", ttl=30)
    async def square(x: int) -> int:
        calls.append(x)
        return x * x

    assert await square(3) == 9
    assert await square(3) == 9
    assert await square(x=4) == 16
    assert calls == [3, 4]
    assert await square.cache_clear() == 2  # type: ignore[attr-defined]
    assert await square(3) == 9
    assert calls == [3, 4, 3]

    with pytest.raises(ConfigError):
        cache.cached(ttl=1)(lambda: 1)  # type: ignore[arg-type,return-value]


async def test_fifty_tasks_one_load(client_class: Any, make_settings: Callable[..., Settings],
                                    write_config: Callable[[str], Path]) -> None:
    # A generous Redis timeout: single flight is the subject; on a loaded machine the default 0.25 s can trip the
    # breaker, which sends later readers to the source by design (tests/read/test_fallback.py).
    sources_fixture.counter.clear()
    async with client_class(settings=make_settings(write_config(KEYSPACES), redis_timeout=2.0)) as cache:
        values = await asyncio.gather(*(cache.get("item:77") for _ in range(50)))
    assert values == [{"id": "77", "n": 1}] * 50
    assert sources_fixture.counter == {"77": 1}


async def test_writes_raise_cache_unavailable(client_class: Any, write_config: Callable[[str], Path]) -> None:
    sources_fixture.counter.clear()
    settings = Settings.load(redis_url=f"redis://127.0.0.1:{free_port()}/0", config=write_config(KEYSPACES),
                             redis_timeout=0.2)
    async with client_class(settings=settings) as cache:
        with pytest.raises(CacheUnavailable):
            await cache.set("item:1", 1)
        with pytest.raises(CacheUnavailable):
            await cache.delete("item:1")
        with pytest.raises(CacheUnavailable):
            await cache.exists("item:1")
        with pytest.raises(CacheUnavailable):
            await cache.clear("item:")
        with pytest.raises(CacheUnavailable):
            await cache.invalidate_tag("items")
        # reads fall back to the source instead
        assert await cache.get("item:1") == {"id": "1", "n": 1}
