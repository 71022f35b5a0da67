"""Scenario 11: load. 8 reader threads at full speed for 15 s (shortened from the issue's 60 s) over 20,000 keys
with a skewed popularity, while a worker and beat refresh hot keys and a writer publishes invalidations.

What must hold: no read fails, values are right, and the popularity tracking in Redis stays within its bound
(`max_tracked` members per keyspace). Reads/s and the tracking memory are printed for RELIABILITY.md.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from cachewarm import Cache, Settings
from cachewarm.demo.redis_server import RedisServer
from cachewarm.invalidation.publish import event_fields, publish_events
from cachewarm.redis_layer.keys import HOT_SHARDS, INVALIDATION_STREAM, KeyLayout
from tests.support.processes import Processes, cluster_env
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

READERS, SECONDS, N_KEYS, MAX_TRACKED = 8, 15.0, 20_000, 2_000
L = KeyLayout()


def test_eight_readers_with_refreshes_and_invalidations(tmp_path: Path,
                                                        write_config: Callable[[str], Path]) -> None:
    config = write_config(f"""
        [keyspaces.item]
        pattern = "item:{{id}}"
        source = "python:tests.faults._support:item_source"
        ttl = 4
        refresh_ahead = 2
        max_tracked = {MAX_TRACKED}
        refresh_worth = 0  # every key above the hot threshold (the policy these reads were written for)
    """)
    with RedisServer() as server:
        env = cluster_env(tmp_path, redis_url=server.url(0), broker_url=server.url(1), config=config,
                          CACHEWARM_SCAN_INTERVAL="0.5")
        settings = Settings.load(redis_url=server.url(0), config=config)
        procs = Processes(tmp_path, env)
        client = redis.Redis.from_url(server.url(0))
        cache = Cache(settings=settings)
        stop = threading.Event()
        errors: list[BaseException] = []
        wrong: list[Any] = []
        counts = [0] * READERS
        published = [0]

        def reader(n: int) -> None:
            rnd = random.Random(n)
            while not stop.is_set():
                # skewed: most reads on a few keys, a fifth spread over all of them (more than max_tracked)
                item = (min(int(rnd.paretovariate(1.0)) - 1, N_KEYS - 1) if rnd.random() < 0.8
                        else rnd.randrange(N_KEYS))
                try:
                    value = cache.get(f"item:{item}")
                except BaseException as exc:
                    errors.append(exc)
                    continue
                if value != {"id": str(item)}:
                    wrong.append((item, value))
                counts[n] += 1

        def writer() -> None:
            rnd = random.Random(99)
            while not stop.is_set():
                events = [event_fields(f"item:{rnd.randrange(200)}") for _ in range(20)]
                publish_events(events, redis=client, settings=settings)
                published[0] += len(events)
                stop.wait(0.1)

        threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(READERS)]
        threads.append(threading.Thread(target=writer, daemon=True))
        try:
            procs.worker(concurrency=2)
            procs.beat()
            wait_until(lambda: client.hexists(L.refresh_stats, "hot_keys:item"), 40, "a first scan",
                       details=procs.logs)
            # and the node's invalidation consumer (its group), started by the sidecar after the worker: on a
            # loaded machine later than the first scan, and a missing group would make "drained" below vacuous
            wait_until(lambda: _groups(client), 40, "the invalidation consumer's group", details=procs.logs)
            started = time.monotonic()
            for thread in threads:
                thread.start()
            time.sleep(SECONDS)
            stop.set()
            for thread in threads:
                thread.join(10)
            elapsed = time.monotonic() - started
            cache.flush_stats()
            groups: Any = client.xinfo_groups(INVALIDATION_STREAM)
            wait_until(lambda: (found := _groups(client)) and all(g["pending"] == 0 and g["lag"] == 0 for g in found),
                       30, "the invalidation group to drain", details=procs.logs)
            tracked = sum(client.zcard(L.hot("item", i)) for i in range(HOT_SHARDS))  # keys.py: 16 shards
            memory = sum(client.memory_usage(L.hot("item", i)) or 0 for i in range(HOT_SHARDS))
            stats = client.hgetall(L.refresh_stats)
            used = client.info("memory")["used_memory"]
        finally:
            stop.set()
            cache.close()
            procs.stop()
            client.close()
        total = sum(counts)
        print(f"\nload: {READERS} readers x {elapsed:.0f} s: {total / elapsed:,.0f} reads/s, 0 errors; "
              f"{published[0]} invalidations published (group lag at stop {groups[0]['lag']}); hot:item "
              f"{tracked} members (max_tracked {MAX_TRACKED}), MEMORY USAGE {memory / 1024:.0f} KiB; "
              f"redis used_memory {used / 2**20:.1f} MiB; refresh stats {len(stats)} fields")
        assert not errors, f"{len(errors)} reads failed, first {errors[0]!r}"
        assert not wrong, wrong[:5]
        assert tracked <= MAX_TRACKED
        assert tracked == MAX_TRACKED, "the bound was not exercised"
        assert total > 0 and published[0] > 0


def _groups(client: redis.Redis) -> list[Any]:
    """The invalidation stream's consumer groups; none while the stream does not exist."""
    try:
        return list(client.xinfo_groups(INVALIDATION_STREAM))
    except redis.ResponseError:  # no such key
        return []
