"""Scenario 1: the cache's Redis is slow (2 s per reply), then unreachable, under reader load.

Readers must never see a Redis exception: they fall back to the source, one load per key per process at a
time, and go back to Redis by themselves once it answers again. The test asserts behaviour only; the timings it
prints (`pytest -s -m faults tests/faults/test_faults_redis_down.py`) are the figures of docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from cachewarm import AsyncCache, Cache, Settings
from cachewarm.demo.redis_server import RedisServer
from cachewarm.demo.source import SourceServer
from tests.faults._support import InFlightTransport, percentile
from tests.support.fault_proxy import FaultProxy

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90), pytest.mark.source(latency=0.05)]

READERS = 6
KEYS = 200
# (phase, proxy mode, seconds): shortened from the 2 s slow / 10 s down to keep the suite fast.
PHASES: list[tuple[str, str, float]] = [
    ("healthy", "pass", 1.5),
    ("slow", "delay", 3.0),
    ("down", "blackhole", 5.0),
    ("refused", "reset", 2.0),  # as when redis-server is stopped: connections refused at once
    ("recovered", "pass", 2.5),
]


@pytest.fixture
def proxied_redis() -> Iterator[tuple[RedisServer, FaultProxy]]:
    with RedisServer() as server, FaultProxy("127.0.0.1", server.port) as proxy:
        yield server, proxy


def test_readers_fall_back_to_the_source_while_redis_is_slow_then_down(
        proxied_redis: tuple[RedisServer, FaultProxy], source: SourceServer,
        write_config: Callable[[str], Path]) -> None:
    _server, proxy = proxied_redis
    config = write_config(f"""
        [keyspaces.product]
        pattern = "product:{{id}}"
        source = "{source.url}/products/{{id}}"
        ttl = 60
    """)
    settings = Settings.load(redis_url=f"redis://{proxy.host}:{proxy.port}/0", config=config,
                             redis_timeout=0.05, redis_backoff=1.0, wait_timeout=1.0, source_timeout=2.0)
    transport = InFlightTransport()
    cache = Cache(settings=settings, http=httpx.Client(transport=transport, timeout=2.0))

    phase = {"name": "healthy"}
    stop = threading.Event()
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: list[BaseException] = []
    wrong: list[tuple[str, object]] = []
    lock = threading.Lock()

    def reader(seed: int) -> None:
        rnd = random.Random(seed)
        while not stop.is_set():
            item = rnd.randrange(KEYS)
            started = time.perf_counter()
            try:
                value = cache.get(f"product:{item}")
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                continue
            elapsed = time.perf_counter() - started
            with lock:
                latencies[phase["name"]].append(elapsed)
                if not isinstance(value, dict) or value.get("id") != str(item):
                    wrong.append((f"product:{item}", value))

    source_requests: dict[str, int] = {}
    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(READERS)]
    try:
        for thread in threads:
            thread.start()
        for name, mode, seconds in PHASES:
            before = transport.requests
            with lock:
                phase["name"] = name
            proxy.set_mode(mode, delay=2.0)  # type: ignore[arg-type]
            time.sleep(seconds)
            source_requests[name] = transport.requests - before
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        proxy.set_mode("pass")
        cache.close()

    assert not errors, f"{len(errors)} reads failed, first: {errors[0]!r}"
    assert not wrong, wrong[:3]
    assert all(not t.is_alive() for t in threads)
    # Single flight: never two source requests for one key at once from this process.
    assert max(transport.max_in_flight.values()) == 1, transport.max_in_flight.most_common(3)
    # Every phase served reads, and once Redis is back the readers use it again (hits, not source loads).
    assert all(latencies[name] for name, _, _ in PHASES)
    assert source_requests["recovered"] < source_requests["down"]
    for name, _, seconds in PHASES:
        samples = latencies[name]
        print(f"\n{name:>9}: {len(samples) / seconds:7.0f} reads/s  p50 {percentile(samples, 0.5) * 1000:6.1f} ms"
              f"  p99 {percentile(samples, 0.99) * 1000:6.1f} ms  max {max(samples) * 1000:6.1f} ms"
              f"  source {source_requests[name] / seconds:5.0f} req/s")


async def test_async_readers_fall_back_too(proxied_redis: tuple[RedisServer, FaultProxy], source: SourceServer,
                                           write_config: Callable[[str], Path]) -> None:
    """The same faults, shorter, for AsyncCache: 20 reader tasks on one event loop."""
    _server, proxy = proxied_redis
    config = write_config(f"""
        [keyspaces.product]
        pattern = "product:{{id}}"
        source = "{source.url}/products/{{id}}"
        ttl = 60
    """)
    settings = Settings.load(redis_url=f"redis://{proxy.host}:{proxy.port}/0", config=config,
                             redis_timeout=0.05, redis_backoff=1.0, wait_timeout=1.0, source_timeout=2.0)
    errors: list[BaseException] = []
    reads: defaultdict[str, int] = defaultdict(int)
    phase = {"name": "healthy"}
    stop = asyncio.Event()
    async with AsyncCache(settings=settings) as cache:

        async def reader(seed: int) -> None:
            rnd = random.Random(seed)
            while not stop.is_set():
                item = rnd.randrange(KEYS)
                try:
                    value = await cache.get(f"product:{item}")
                except Exception as exc:
                    errors.append(exc)
                    continue
                assert value["id"] == str(item)
                reads[phase["name"]] += 1

        tasks = [asyncio.create_task(reader(i)) for i in range(20)]
        for name, mode in (("healthy", "pass"), ("slow", "delay"), ("down", "blackhole"), ("refused", "reset"),
                           ("recovered", "pass")):
            phase["name"] = name
            await asyncio.to_thread(proxy.set_mode, mode, delay=2.0)  # type: ignore[arg-type]
            await asyncio.sleep(1.5)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert not errors, f"{len(errors)} reads failed, first: {errors[0]!r}"
    assert all(reads[name] for name in ("healthy", "slow", "down", "refused", "recovered")), dict(reads)
