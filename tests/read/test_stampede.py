"""Stampede protection: many concurrent misses of one key cost one source call, across threads, tasks and
processes; waiters block instead of polling; a dead loader's lease runs out by itself."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cachewarm import AsyncCache, Cache, Settings
from cachewarm.redis_layer.keys import KeyLayout
from tests.support.redis_cluster import topologies

ROOT = Path(__file__).resolve().parents[2]

KEYSPACES = """
[keyspaces.slow]
pattern = "slow:{id}"
source = "python:tests.support.sources_fixture:slow_counted"
ttl = 60
"""

CHILD = r"""
import json, os, sys, threading, time
from pathlib import Path
from cachewarm import Cache, Settings

settings = Settings.load()
caches = [Cache(settings=settings) for _ in range(5)]
results = [None] * 25
go = Path(sys.argv[1])
Path(sys.argv[2]).touch()  # ready

def read(i):
    while not go.exists():
        time.sleep(0.001)
    results[i] = caches[i % 5].get(sys.argv[3])

threads = [threading.Thread(target=read, args=(i,)) for i in range(25)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(results))
"""

HOLDER = r"""
import sys
from cachewarm import Cache
Cache.from_settings().get(sys.argv[1])  # the source sleeps long enough to be killed while loading
"""


@pytest.fixture
def calls_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "calls.txt"
    path.touch()
    monkeypatch.setenv("CACHEWARM_TEST_CALLS", str(path))
    monkeypatch.setenv("CACHEWARM_TEST_DELAY", "0.5")
    return path


@pytest.fixture
def settings(make_settings: Callable[..., Settings], write_config: Callable[[str], Path]) -> Settings:
    # A generous Redis timeout: these tests are about single flight, and on a loaded machine the default 0.25 s
    # trips the breaker, which (by design, tests/read/test_fallback.py) sends readers to the source.
    return make_settings(write_config(KEYSPACES), redis_timeout=2.0)


@pytest.fixture
def caches(settings: Settings) -> Iterator[list[Cache]]:
    made = [Cache(settings=settings) for _ in range(10)]
    yield made
    for cache in made:
        cache.close()


def source_calls(path: Path) -> list[str]:
    return path.read_text().splitlines()


def read_in_threads(caches: list[Cache], key: str, n: int = 50) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def read(i: int) -> None:
        barrier.wait()
        results[i] = caches[i % len(caches)].get(key)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@topologies
def test_fifty_threads_one_source_call(caches: list[Cache], calls_file: Path) -> None:
    # Ten clients, five threads each: the in-process single flight alone cannot explain one call.
    results = read_in_threads(caches, "slow:1")
    assert len(source_calls(calls_file)) == 1
    assert all(r == results[0] for r in results) and results[0]["id"] == "1"
    assert all(c.exists("slow:1") for c in caches)


@topologies
async def test_fifty_tasks_one_source_call(settings: Settings, calls_file: Path) -> None:
    clients = [AsyncCache(settings=settings) for _ in range(10)]
    try:
        results = await asyncio.gather(*(clients[i % 10].get("slow:2") for i in range(50)))
    finally:
        for c in clients:
            await c.aclose()
    assert len(source_calls(calls_file)) == 1
    assert results == [results[0]] * 50 and results[0]["id"] == "2"


@topologies
def test_two_processes_fifty_threads_one_source_call(settings: Settings, calls_file: Path, tmp_path: Path) -> None:
    env = {**os.environ, "CACHEWARM_REDIS_URL": settings.redis_url, "CACHEWARM_CONFIG": str(settings.config),
           "CACHEWARM_REDIS_TIMEOUT": str(settings.redis_timeout), "PYTHONPATH": str(ROOT),
           "CACHEWARM_REDIS_CLUSTER": str(settings.redis_cluster).lower()}
    go = tmp_path / "go"
    ready = [tmp_path / "ready-a", tmp_path / "ready-b"]
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(go), str(r), "slow:3"], env=env, cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in ready]
    try:
        while not all(r.exists() for r in ready):
            assert all(c.poll() is None for c in children), [c.communicate() for c in children]
            time.sleep(0.01)
        go.touch()  # releases all fifty readers together
        outputs = [c.communicate(timeout=60) for c in children]
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()
    assert [c.returncode for c in children] == [0, 0], outputs
    results = [item for out, _err in outputs for item in json.loads(out)]
    assert len(results) == 50
    lines = source_calls(calls_file)
    assert len(lines) == 1, lines
    loader_pid = int(lines[0].split()[0])
    assert loader_pid in {c.pid for c in children}
    assert all(r == {"id": "3", "loaded_by": loader_pid} for r in results)


@topologies
def test_a_dead_loaders_lease_runs_out(make_settings: Callable[..., Settings], write_config: Callable[[str], Path],
                                       redis_client: redis.Redis, calls_file: Path) -> None:
    """A lease nobody will release (its loader died): readers wait for it to expire, then one loads and stores."""
    settings = make_settings(write_config(KEYSPACES), lease_ms=400, wait_timeout=30)
    layout = KeyLayout(settings.key_prefix)
    redis_client.set(layout.lease("slow:4"), "dead-loader", px=400)
    with Cache(settings=settings) as cache:
        results = read_in_threads([cache], "slow:4", n=10)
        assert results == [results[0]] * 10 and results[0]["id"] == "4"
        assert len(source_calls(calls_file)) == 1
        # Loaded under a lease of its own and stored: not the give-up path (which would wait 30 s and not store).
        assert cache.exists("slow:4")


@topologies
def test_a_loader_killed_with_sigkill_does_not_lock_the_key(make_settings: Callable[..., Settings],
                                                            write_config: Callable[[str], Path],
                                                            redis_client: redis.Redis, calls_file: Path) -> None:
    settings = make_settings(write_config(KEYSPACES), lease_ms=500, wait_timeout=30)
    layout = KeyLayout(settings.key_prefix)
    env = {**os.environ, "CACHEWARM_REDIS_URL": settings.redis_url, "CACHEWARM_CONFIG": str(settings.config),
           "CACHEWARM_LEASE_MS": "500", "CACHEWARM_TEST_DELAY": "60", "PYTHONPATH": str(ROOT),
           "CACHEWARM_REDIS_CLUSTER": str(settings.redis_cluster).lower()}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "slow:5"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not source_calls(calls_file):  # the child holds the lease and is inside the source
            assert holder.poll() is None
            time.sleep(0.01)
        assert redis_client.exists(layout.lease("slow:5"))
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    with Cache(settings=settings) as cache:
        assert cache.get("slow:5")["loaded_by"] == os.getpid()
        assert cache.exists("slow:5")
    assert len(source_calls(calls_file)) == 2


def test_waiters_block_instead_of_polling(settings: Settings, redis_client: redis.Redis, calls_file: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Fifty clients wait about a second for one load; a 10 ms poll loop would send ~5000 commands."""
    monkeypatch.setenv("CACHEWARM_TEST_DELAY", "1.0")
    clients = [Cache(settings=settings) for _ in range(50)]
    try:
        for c in clients:
            c.redis.ping()
        redis_client.config_resetstat()
        results = read_in_threads(clients, "slow:6")
        stats = redis_client.info("commandstats")
    finally:
        for c in clients:
            c.close()
    assert len(source_calls(calls_file)) == 1
    assert results == [results[0]] * 50
    round_trips = sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("get", "evalsha", "blpop"))
    total = sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_"))
    assert round_trips < 400, stats  # about 6 per waiter, counting the GETs run inside Lua
    scripted = sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "blpop"))
    assert scripted < 200, stats  # ACQUIRE, BLPOP until woken, ACQUIRE again: about 3 per waiter
    assert total < 1000, stats
