"""Redis unavailable: reads fall back to the source, count the error, never raise a Redis exception, and go back
to Redis by themselves when it returns. Each test runs its own redis-server, so it can stop and restart it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from cachewarm import AsyncCache, Cache, Settings
from cachewarm.demo.redis_server import RedisServer
from cachewarm.hooks import Hooks, get_hooks, set_hooks
from cachewarm.redis_layer.keys import KeyLayout
from tests.support import sources_fixture
from tests.support.waiting import wait_until

KEYSPACES = """
[keyspaces.item]
pattern = "item:{id}"
source = "python:tests.support.sources_fixture:counted"
ttl = 60
"""


class CountingHooks(Hooks):
    def __init__(self) -> None:
        self.redis_errors: list[str] = []

    def redis_error(self, operation: str) -> None:
        self.redis_errors.append(operation)


@pytest.fixture
def hooks() -> Iterator[CountingHooks]:
    previous = get_hooks()
    counting = CountingHooks()
    set_hooks(counting)
    yield counting
    set_hooks(previous)


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


@pytest.fixture
def settings(server: RedisServer, write_config: Callable[[str], Path]) -> Settings:
    sources_fixture.counter.clear()
    return Settings.load(redis_url=server.url(0), config=write_config(KEYSPACES), redis_timeout=0.2,
                         redis_backoff=0.1, stats_flush_interval=60)


def cached_in_redis(server: RedisServer, key: str) -> bool:
    client = redis.Redis.from_url(server.url(0), socket_timeout=1)
    try:
        return bool(client.exists(KeyLayout().value(key)))
    finally:
        client.close()


def test_get_falls_back_to_the_source_and_recovers(server: RedisServer, settings: Settings,
                                                   hooks: CountingHooks) -> None:
    with Cache(settings=settings) as cache:
        assert cache.get("item:1") == {"id": "1", "n": 1}
        assert cache.lookup("item:1").hit
        server.stop()
        for n in range(2, 6):  # every read reaches the source, none raises
            found = cache.lookup("item:1")
            assert found.value == {"id": "1", "n": n} and not found.hit
        assert cache.get("item:2") == {"id": "2", "n": 1}
        assert hooks.redis_errors  # the error was counted
        server.start()  # same port, empty (no persistence)

        def back() -> bool:
            cache.get("item:3")
            return cached_in_redis(server, "item:3")

        # no reset, no new client: the read path finds Redis again by itself
        wait_until(back, 10, "a read to be cached in the restarted Redis", interval=0.025)
        assert cache.lookup("item:3").hit


def test_get_survives_a_hung_redis(server: RedisServer, settings: Settings, hooks: CountingHooks) -> None:
    """A Redis that accepts connections but does not answer (SIGSTOP): the short read timeout applies."""
    with Cache(settings=settings) as cache:
        assert cache.get("item:1") == {"id": "1", "n": 1}
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            assert cache.get("item:1") == {"id": "1", "n": 2}
            assert cache.get("item:1") == {"id": "1", "n": 3}
            assert "read" in hooks.redis_errors
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        wait_until(lambda: cache.lookup("item:1").hit, 10, "a hit once Redis answers again", interval=0.025)


def test_reads_during_an_outage_are_counted_as_misses(settings: Settings, server: RedisServer,
                                                       hooks: CountingHooks) -> None:
    server.stop()
    with Cache(settings=settings) as cache:
        assert cache.get("item:9") == {"id": "9", "n": 1}
        assert cache.get("item:9") == {"id": "9", "n": 2}
        assert cache.flush_stats() is False  # Redis is down: the batch is dropped, nothing raised
        assert hooks.redis_errors
        cache.get("item:9")
        server.start()
        wait_until(cache.flush_stats, 10, "the counts to flush to the restarted Redis", interval=0.025)
        client = redis.Redis.from_url(server.url(0))
        assert client.hget("cachewarm:stats", "miss:item") == b"1"  # the read after the failed flush
        assert client.hget("cachewarm:stats", "hit:item") is None
        client.close()


async def test_async_get_falls_back_and_recovers(server: RedisServer, settings: Settings,
                                                 hooks: CountingHooks) -> None:
    async with AsyncCache(settings=settings) as cache:
        assert await cache.get("item:1") == {"id": "1", "n": 1}
        server.stop()
        assert await cache.get("item:1") == {"id": "1", "n": 2}
        assert await cache.get("item:1") == {"id": "1", "n": 3}
        assert hooks.redis_errors
        server.start()
        for _ in range(400):
            await cache.get("item:4")
            if cached_in_redis(server, "item:4"):
                break
            time.sleep(0.025)
        assert (await cache.lookup("item:4")).hit
