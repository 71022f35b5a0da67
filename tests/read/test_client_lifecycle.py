"""Closing a client stops what it started: the read-accounting flush thread and every Redis connection."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from cachewarm import AsyncCache, Cache, Settings
from cachewarm.redis_layer import script_calls, scripts
from cachewarm.redis_layer.keys import KeyLayout
from tests.support import sources_fixture
from tests.support.clients import FLAVOURS

KEYSPACES = """
[keyspaces.item]
pattern = "item:{id}"
source = "python:tests.support.sources_fixture:counted"
ttl = 60
"""
NAME = "lifecycle-test"


def _connections(redis_client: redis.Redis) -> int:
    """This test's clients' connections on the redis-server (named by the URL's client_name)."""
    return sum(1 for client in redis_client.client_list() if client.get("name") == NAME)


def _hold_lease(redis_client: redis.Redis, settings: Settings, key: str) -> None:
    """Another process's lease on key for 100 ms: a read of it waits (BLPOP, the blocking connection)."""
    call = script_calls.acquire(KeyLayout(settings.key_prefix), key=key, token="elsewhere", lease_ms=100)
    assert scripts.run(redis_client, call).status is script_calls.AcquireStatus.LOAD


def _use(cache: Cache, hold: Callable[[], None]) -> None:
    """A miss (lease, write), a hit (the flush thread starts), a write, a wait on a lease held elsewhere."""
    assert cache.get("item:1") == cache.get("item:1")
    hold()
    assert cache.get("item:3") == {"id": "3", "n": 1}
    cache.set("item:2", {"x": 1})
    assert cache.flush_stats()


async def _ause(cache: AsyncCache, hold: Callable[[], None]) -> None:
    assert await cache.get("item:1") == await cache.get("item:1")
    hold()
    assert await cache.get("item:3") == {"id": "3", "n": 1}
    await cache.set("item:2", {"x": 1})
    assert await cache.flush_stats()


def _started(redis_client: redis.Redis, before: set[threading.Thread]) -> list[str]:
    assert _connections(redis_client) >= 3, "the client, its blocking client and its recorder are connected"
    return [t.name for t in threading.enumerate() if t not in before]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_close_leaves_no_thread_and_no_connection(flavour: str, redis_url: str, redis_client: redis.Redis,
                                                  write_config: Callable[[str], Path]) -> None:
    sources_fixture.counter.clear()
    settings = Settings.load(redis_url=f"{redis_url}?client_name={NAME}", config=write_config(KEYSPACES),
                             stats_flush_interval=0.05)
    before = set(threading.enumerate())
    hold = functools.partial(_hold_lease, redis_client, settings, "item:3")
    if flavour == "sync":
        with Cache(settings=settings) as cache:
            _use(cache, hold)
            started = _started(redis_client, before)
    else:
        async def main() -> list[str]:
            async with AsyncCache(settings=settings) as cache:
                await _ause(cache, hold)
                return _started(redis_client, before)

        started = asyncio.run(main())
    assert "cachewarm-access-flush" in started
    assert [t.name for t in threading.enumerate() if t not in before] == []
    assert _connections(redis_client) == 0


def test_a_shared_recorder_stops_with_its_last_client(redis_url: str, write_config: Callable[[str], Path]) -> None:
    settings = Settings.load(redis_url=redis_url, config=write_config(KEYSPACES), stats_flush_interval=0.05)
    first, second = Cache(settings=settings), Cache(settings=settings)
    first.get("item:1")
    recorder = first._account.recorder
    assert recorder is not None and recorder is second._account.recorder
    first.close()
    first.close()  # closing twice gives the recorder back once
    assert recorder.running
    second.get("item:1")
    second.close()
    assert not recorder.running
