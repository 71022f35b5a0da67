"""Trace recording against a real Redis: while ``trace:on`` holds a share, the reads of sampled keys (every one of
them, with its time) reach ``trace:reads`` at the recorder's flush; with it off nothing does; and `cachewarm trace`
writes what it drained as a trace the simulator reads."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from cachewarm import Cache, Settings
from cachewarm.cli.trace import record
from cachewarm.read.tracing import TRACE_ON, TRACE_READS, sampled
from cachewarm.simulation.trace import read_trace
from tests.support import sources_fixture

KEYSPACES = """
[keyspaces.item]
pattern = "item:{id}"
source = "python:tests.support.sources_fixture:counted"
ttl = 60
"""
ON, READS = "cachewarm:" + TRACE_ON, "cachewarm:" + TRACE_READS


@pytest.fixture
def cache(make_cache: Callable[..., Cache], write_config: Callable[[str], Path]) -> Cache:
    sources_fixture.counter.clear()
    return make_cache(write_config(KEYSPACES), stats_flush_interval=3600)


def _lines(client: redis.Redis) -> list[tuple[int, str]]:
    out = []
    for raw in client.lrange(READS, 0, -1):
        ms, _, key = raw.decode().partition(" ")
        out.append((int(ms), key))
    return out


def test_nothing_is_sent_while_no_recording_is_on(cache: Cache, redis_client: redis.Redis) -> None:
    for i in range(20):
        cache.get(f"item:{i}")
    assert cache.flush_stats()
    assert not redis_client.exists(READS)


def test_every_read_of_a_sampled_key_and_none_of_the_others(cache: Cache, redis_client: redis.Redis) -> None:
    redis_client.set(ON, "0.5", px=60_000)
    cache.get("item:before")
    assert cache.flush_stats()  # a flush of reads learns that a recording is on (its pipeline asks)
    assert not redis_client.exists(READS)  # the read before it was not recorded
    before = int(time.time() * 1000)
    keys = [f"item:{i}" for i in range(200)]
    for _ in range(3):
        for key in keys:
            cache.get(key)
    after = int(time.time() * 1000)
    assert cache.flush_stats()
    lines = _lines(redis_client)
    wanted = [key for key in keys if sampled(key, 0.5)]
    assert 60 <= len(wanted) <= 140  # about half the keys, by their hash
    assert Counter(key for _, key in lines) == {key: 3 for key in wanted}
    assert all(before <= ms <= after for ms, _ in lines)
    assert redis_client.ttl(READS) > 0  # lines nobody drains go away
    # The recording ends (the command deletes the switch, or its TTL does): the next flush stops it.
    redis_client.delete(ON, READS)
    assert cache.flush_stats()
    cache.get("item:1")
    assert cache.flush_stats()
    assert not redis_client.exists(READS)


def test_the_trace_command_writes_a_trace_the_simulator_reads(
        make_settings: Callable[..., Settings], write_config: Callable[[str], Path], redis_client: redis.Redis,
        tmp_path: Path) -> None:
    settings = make_settings(write_config(KEYSPACES), stats_flush_interval=0.05)
    sources_fixture.counter.clear()
    stop = threading.Event()

    def reader() -> None:
        with Cache(settings=settings) as cache:
            while not stop.is_set():
                for i in range(50):
                    cache.get(f"item:{i}")
                time.sleep(0.01)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    out = tmp_path / "reads.trace.gz"
    try:
        lines, keys = record(settings, 1.5, out, 1.0)
    finally:
        stop.set()
        thread.join(10)
    assert lines > 100 and keys == 50
    trace = read_trace(out)
    assert trace.info.sample == 1.0
    assert len(trace.reads) == lines
    assert {key for _, key in trace.reads} == {f"item:{i}" for i in range(50)}
    assert 0.5 < trace.seconds < 3
    assert not redis_client.exists(ON)  # the recording is off again
