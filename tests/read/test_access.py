"""Read accounting: hits and misses reach the cluster-wide `stats` hash, keys reach the hot zset, and a hit costs
one GET (the accounting is buffered in-process and flushed in one script call)."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from cachewarm import AsyncCache, Cache, Settings
from cachewarm.read.access import AccessRecorder, recorder_for, release_recorder
from cachewarm.redis_layer.keys import KeyLayout, shard_of
from tests.support import sources_fixture
from tests.support.hot import hot_members, hot_score
from tests.support.redis_cluster import topologies

KEYSPACES = """
[keyspaces.item]
pattern = "item:{id}"
source = "python:tests.support.sources_fixture:counted"
ttl = 60
max_tracked = 48  # 3 per hot-set shard (16 shards)

[keyspaces.price]
pattern = "price:{region}:{id}"
source = "python:tests.support.sources_fixture:price"
ttl = 60
"""


@pytest.fixture
def cache(make_cache: Callable[..., Cache], write_config: Callable[[str], Path]) -> Cache:
    sources_fixture.counter.clear()
    # flushed only when the test says so
    return make_cache(write_config(KEYSPACES), stats_flush_interval=3600, hot_half_life=3600)


def stats(client: redis.Redis) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in client.hgetall("cachewarm:stats").items()}


def test_hits_and_misses_reach_the_stats_hash(cache: Cache, redis_client: redis.Redis) -> None:
    for _ in range(5):
        cache.get("item:1")
    cache.get("price:eu:1")
    cache.get("price:eu:missing")
    cache.get("price:eu:missing")  # a remembered "no such item" is a hit too
    assert stats(redis_client) == {}  # buffered until flushed
    assert cache.flush_stats()
    counted = stats(redis_client)
    assert counted["hit:item"] == 4 and counted["miss:item"] == 1
    assert counted["hit:price"] == 1 and counted["miss:price"] == 2
    assert sum(v for k, v in counted.items() if k.startswith("age:item:")) == 4
    assert counted["agesum:item"] >= 0
    cache.get("item:1")
    assert cache.flush_stats()
    assert stats(redis_client)["hit:item"] == 5


def test_hot_zset_gets_the_keys(cache: Cache, redis_client: redis.Redis) -> None:
    # five keys of one hot-set shard (shard_of: 15), and one of another
    reads = {"item:1": 6, "item:34": 4, "item:55": 2, "item:62": 1, "item:88": 3, "item:2": 1}
    assert len({shard_of(key) for key in reads}) == 2
    for key, n in reads.items():
        for _ in range(n):
            cache.get(key)
    assert cache.flush_stats()
    hot = {k.encode(): v for k, v in hot_members(redis_client, KeyLayout(), "item").items()}
    # max_tracked = 48: 3 per shard, so the coldest keys of the crowded shard were dropped
    assert set(hot) == {b"item:1", b"item:34", b"item:88", b"item:2"}
    # with a one-hour half-life the scores are (nearly) the read counts, relative to the epoch
    assert redis_client.exists(KeyLayout().hot_epoch("item", shard_of("item:1")))
    assert math.isclose(hot[b"item:1"], 6, rel_tol=0.01)
    assert math.isclose(hot[b"item:88"], 3, rel_tol=0.01)
    assert hot_score(redis_client, KeyLayout(), "price", "price:eu:1") is None


def test_a_hit_costs_one_get(cache: Cache, redis_client: redis.Redis) -> None:
    cache.get("item:7")
    redis_client.config_resetstat()
    for _ in range(50):
        assert cache.lookup("item:7").hit
    for _ in range(50):
        assert cache.get("item:7") == {"id": "7", "n": 1}
    commands = {k.removeprefix("cmdstat_"): int(v["calls"])
                for k, v in redis_client.info("commandstats").items()}
    commands.pop("info", None)
    commands.pop("config|resetstat", None)
    assert commands == {"get": 100}
    assert cache.flush_stats()
    assert stats(redis_client)["hit:item"] == 100


async def test_async_reads_are_counted_too(make_settings: Callable[..., Settings],
                                           write_config: Callable[[str], Path], redis_client: redis.Redis) -> None:
    settings = make_settings(write_config(KEYSPACES), stats_flush_interval=3600)
    async with AsyncCache(settings=settings) as cache:
        await cache.get("price:us:2")
        await cache.get("price:us:2")
        assert await cache.flush_stats()
    counted = stats(redis_client)
    assert counted["hit:price"] == 1 and counted["miss:price"] == 1
    assert hot_score(redis_client, KeyLayout(), "price", "price:us:2") is not None


def test_counts_flush_by_themselves(make_cache: Callable[..., Cache], write_config: Callable[[str], Path],
                                   redis_client: redis.Redis) -> None:
    cache = make_cache(write_config(KEYSPACES), stats_flush_interval=0.05)
    cache.get("item:8")
    cache.get("item:8")
    for _ in range(200):
        counted = stats(redis_client)
        if counted.get("hit:item") == 1:
            break
        time.sleep(0.025)
    assert counted.get("hit:item") == 1 and counted.get("miss:item") == 1


def test_recorder_batches_reads_of_one_key(redis_url: str, redis_client: redis.Redis) -> None:
    recorder = AccessRecorder(redis_url, "cachewarm:", half_life=3600, interval=3600, timeout=1)
    for _ in range(50):
        recorder.record("ks", "ks:1", 100, True, 0.2)
    recorder.count("stale:ks", 2)
    redis_client.config_resetstat()
    assert recorder.flush()
    assert int(redis_client.info("commandstats")["cmdstat_evalsha"]["calls"]) == 1
    counted = stats(redis_client)
    assert counted["hit:ks"] == 50 and counted["stale:ks"] == 2
    assert math.isclose(hot_score(redis_client, KeyLayout(), "ks", "ks:1") or 0, 50, rel_tol=0.01)
    recorder.close()


FORK_CHILD = """
import os, sys
from cachewarm.read.access import AccessRecorder
recorder = AccessRecorder(sys.argv[1], "cachewarm:", half_life=3600, interval=3600, timeout=1,
                          cluster=sys.argv[2] == "cluster")
for _ in range(5):
    recorder.record("ks", "ks:1", 100, True, 0.1)   # starts the flush thread: the fork below happens beside it
pid = os.fork()
if pid == 0:  # the child: its buffer starts empty, with a thread and a connection of its own
    code = 1
    try:
        recorder.record("ks", "ks:1", 100, False, 0.0)
        code = 0 if recorder.flush() else 2
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), flush=True)
input()
recorder.close()
"""


@topologies
def test_a_forked_child_does_not_send_the_parents_counts(redis_url: str, redis_client: redis.Redis,
                                                         topology: str) -> None:
    # In a process of its own: pytest's process runs other tests' threads, which a fork here would copy mid-lock.
    proc = subprocess.Popen([sys.executable, "-c", FORK_CHILD, redis_url, topology], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.readline().strip() == "0"
    assert stats(redis_client) == {"miss:ks": 1}
    proc.stdin.write("\n")
    proc.stdin.close()
    assert proc.wait(20) == 0
    proc.stdout.close()
    counted = stats(redis_client)
    assert counted["hit:ks"] == 5 and counted["miss:ks"] == 1


def test_close_stops_the_thread_and_closes_the_connection(redis_url: str, redis_client: redis.Redis) -> None:
    connections = len(redis_client.client_list())
    recorder = AccessRecorder(redis_url, "cachewarm:", half_life=3600, interval=0.01, timeout=1)
    recorder.record("ks", "ks:1", 100, True, 0.1)  # starts the flush thread
    assert recorder.running
    thread = recorder._thread
    assert thread is not None
    deadline = time.monotonic() + 5
    while stats(redis_client).get("hit:ks") != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(redis_client.client_list()) == connections + 1
    recorder.record("ks", "ks:1", 100, False, 0.0)
    recorder.close()
    assert not recorder.running and not thread.is_alive()
    assert len(redis_client.client_list()) == connections
    assert stats(redis_client)["miss:ks"] == 1  # what was left is sent by close()
    recorder.record("ks", "ks:1", 100, True, 0.1)  # a read after close starts nothing
    assert not recorder.running


def test_a_shared_recorder_is_closed_by_its_last_user(redis_url: str) -> None:
    timing = {"half_life": 3600.0, "interval": 0.01, "timeout": 1.0}
    first = recorder_for(redis_url, "cachewarm:", **timing)
    second = recorder_for(redis_url, "cachewarm:", **timing)
    assert first is second
    first.record("ks", "ks:1", 100, True, 0.1)
    release_recorder(first)
    assert first.running  # the other user still reads through it
    release_recorder(second)
    assert not first.running
    third = recorder_for(redis_url, "cachewarm:", **timing)
    assert third is not first  # a closed recorder is never handed out again
    release_recorder(third)


IMPORT_REGISTERS = """
import atexit, os
registered = []
real_at_fork, real_atexit = os.register_at_fork, atexit.register
os.register_at_fork = lambda **kw: (registered.extend(kw.values()), real_at_fork(**kw))[1]
atexit.register = lambda f, *a, **kw: (registered.append(f), real_atexit(f, *a, **kw))[1]
import cachewarm, cachewarm.read.access, cachewarm.invalidation.consumer, cachewarm.metrics.server, cachewarm.cli.status
names = (f"{getattr(f, '__module__', None)}.{getattr(f, '__qualname__', f)}" for f in registered)
print(sorted(name for name in names if name.startswith("cachewarm")))
"""


def test_importing_cachewarm_registers_nothing() -> None:
    out = subprocess.run([sys.executable, "-c", IMPORT_REGISTERS], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
