"""Eviction (issue 10 item 5): the cache Redis runs with maxmemory and an eviction policy, so a key's fence and
version floor can be evicted while its value is not, or the reverse. No read may ever return a version older than
one already served for that key.

The dangerous case is a load in flight whose fence is evicted (with its value) and made again: had the fence come
back with the generation the load holds, its fetch, older than what was served meanwhile, would be written. A
token is therefore never "no fence" (a missing fence is made with a generation from Redis's clock) and a fence made
again never repeats a generation (lua/preamble.lua); `test_a_load_in_flight_cannot_write_after_its_fence_was_evicted`
fails without that (its write goes through). The stress test runs readers, refreshes and versioned invalidations
against a redis-server with `maxmemory` and `allkeys-lfu` (what docker-compose runs) under heavy eviction.
"""

from __future__ import annotations

import asyncio
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
from cachewarm.invalidation.apply import apply_events
from cachewarm.invalidation.events import Event
from cachewarm.redis_layer import envelope, script_calls, scripts
from cachewarm.redis_layer.connections import async_client
from cachewarm.redis_layer.keys import KeyLayout
from cachewarm.warming.context import RefreshContext, make_http_client
from cachewarm.warming.refresh import refresh_batch
from tests.support.redis_cluster import topologies

pytestmark = pytest.mark.timeout(90)

DB: dict[str, int] = {}
_db_lock = threading.Lock()


def source(id: str) -> dict[str, Any]:
    with _db_lock:
        version = DB.setdefault(id, 1)
    time.sleep(random.uniform(0, 0.003))  # loads overlap invalidations
    return {"id": id, "version": version, "pad": "x" * 200}


CONFIG = f"""
[keyspaces.ev]
pattern = "ev:{{id}}"
source = "python:{__name__}:source"
ttl = 30
refresh_ahead = 29
refresh_worth = 0  # every key above the hot threshold (the policy these reads were written for)
version_field = "version"
"""
L = KeyLayout()


def _write(client: redis.Redis, key: str, fence: str, version: int) -> script_calls.WriteStatus:
    raw = envelope.encode(envelope.dumps({"version": version}), fetched_ms=int(time.time() * 1000), ttl_ms=30_000,
                          version=version)
    return scripts.run(client, script_calls.write(L, key=key, envelope=raw, px=30_000, fence=fence, lease_token="",
                                                  version=version, fence_ttl=86400, bump=False))


def _token(client: redis.Redis, key: str, lease: str) -> str:
    taken = scripts.run(client, script_calls.acquire(L, key=key, token=lease, lease_ms=30_000))
    assert taken.status is script_calls.AcquireStatus.LOAD
    return taken.fence


@topologies
@pytest.mark.parametrize("after", ["nothing", "an invalidation remakes the fence", "a load remakes the fence"])
def test_a_load_in_flight_cannot_write_after_its_fence_was_evicted(redis_client: redis.Redis, after: str) -> None:
    key = "ev:1"
    stale = _token(redis_client, key, "slow")               # the slow load takes its token, fetches version 1
    apply_events(redis_client, [Event("1-1", "key", key, version=2)], layout=L, fence_ttl=86400)   # v2 committed
    redis_client.delete(L.lease(key))
    fresh = _token(redis_client, key, "fast")               # another load fetches and writes version 2: served
    assert _write(redis_client, key, fresh, 2) is script_calls.WriteStatus.WRITTEN
    redis_client.delete(L.fence(key), L.value(key), L.lease(key))   # evicted (maxmemory)
    if after == "an invalidation remakes the fence":
        apply_events(redis_client, [Event("1-2", "key", key)], layout=L, fence_ttl=86400)
    elif after == "a load remakes the fence":
        _token(redis_client, key, "third")
    assert _write(redis_client, key, stale, 1) is script_calls.WriteStatus.REJECTED
    raw = redis_client.get(L.value(key))
    assert raw is None or (envelope.decode(raw).version or 0) >= 2


def test_no_read_goes_back_a_version_under_heavy_eviction(tmp_path: Path, write_config: Callable[[str], Path]) -> None:
    keys = [f"ev:{i}" for i in range(300)]
    DB.clear()
    with RedisServer(extra_args=["--maxmemory", "3mb", "--maxmemory-policy", "allkeys-lfu"]) as server:
        settings = Settings.load(redis_url=server.url(0), config=write_config(CONFIG), redis_timeout=2.0,
                                 stats_flush_interval=0.05)
        admin = redis.Redis.from_url(server.url(0))
        stop = threading.Event()
        served: dict[str, int] = {}            # the highest version a completed read returned, per key
        lock = threading.Lock()
        violations: list[str] = []
        counts = {"reads": 0, "invalidations": 0, "refreshed": 0}

        def reader(seed: int) -> None:
            rng = random.Random(seed)
            with Cache(settings=settings) as cache:
                while not stop.is_set():
                    key = rng.choice(keys)
                    with lock:
                        floor = served.get(key, 0)
                    version = int(cache.get(key)["version"])
                    with lock:
                        counts["reads"] += 1
                        if version < floor:
                            violations.append(f"{key}: served {version} after {floor}")
                        served[key] = max(served.get(key, 0), version)

        def writer() -> None:
            rng = random.Random(7)
            n = 0
            while not stop.is_set():
                batch = []
                for key in rng.sample(keys, 20):
                    with _db_lock:
                        DB[key.split(":")[1]] = version = DB.get(key.split(":")[1], 1) + 1
                    n += 1
                    batch.append(Event(f"{n}-0", "key", key, version=version))
                apply_events(admin, batch, layout=L, fence_ttl=settings.fence_ttl)
                counts["invalidations"] += len(batch)
                time.sleep(0.005)

        def filler() -> None:
            junk = "j" * 2048
            i = 0
            while not stop.is_set():
                pipe = admin.pipeline(transaction=False)
                for _ in range(50):
                    i += 1
                    pipe.set(f"junk:{i}", junk)
                pipe.execute()
                time.sleep(0.002)

        async def refresher() -> None:
            ctx = RefreshContext(settings, async_client(settings.redis_url, timeout=5), make_http_client(settings),
                                 "evict")
            rng = random.Random(11)
            try:
                while not stop.is_set():
                    done = await refresh_batch(ctx, rng.sample(keys, 40), force=True)
                    counts["refreshed"] += done.get("ok", 0)
            finally:
                await ctx.redis.aclose()
                await ctx.http.aclose()

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
        threads += [threading.Thread(target=writer), threading.Thread(target=filler),
                    threading.Thread(target=lambda: asyncio.run(refresher()))]
        for thread in threads:
            thread.start()
        try:
            time.sleep(8)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        evicted = int(admin.info("stats")["evicted_keys"])
        admin.close()
    print(f"\neviction: {counts['reads']} reads, {counts['invalidations']} versioned invalidations, "
          f"{counts['refreshed']} refreshes written, {evicted} keys evicted; versions gone back: {len(violations)}")
    assert evicted > 1000, "no eviction pressure"
    assert counts["reads"] > 500 and counts["invalidations"] > 500 and counts["refreshed"] > 100, counts
    assert not violations, violations[:10]
