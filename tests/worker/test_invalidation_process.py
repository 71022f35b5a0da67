"""The invalidation consumer in its own process (worker/invalidation_process.py), hot keys handed to the sidecar's
refresh engine through a pipe (invalidation/handoff.py): it starts and stops with the sidecar, a kill of it loses
nothing (the restarted consumer claims what it left pending), repeats coalesce, the hand-off never blocks the
consumer, and a dead refresher costs only the early refresh (the value is deleted: the next reader loads)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import redis

from cachewarm import Cache, Settings, publish_invalidation
from cachewarm.invalidation.consumer import InvalidationConsumer
from cachewarm.invalidation.handoff import KeyPipeReader, KeyPipeWriter
from cachewarm.redis_layer.keys import CONSUMER_GROUP, INVALIDATION_STREAM
from cachewarm.warming.hot_refresh import HotRefresher
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
[keyspaces.product]
pattern = "product:{id}"
source = "python:tests.support.sources_fixture:counted"
ttl = 60
"""


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return found


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:  # a zombie has exited
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _consumers(client: redis.Redis) -> list[str]:
    try:
        return [c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
                for c in client.xinfo_consumers(INVALIDATION_STREAM, CONSUMER_GROUP)]
    except redis.ResponseError:
        return []


@pytest.fixture
def env(redis_url: str, write_config: Callable[[str], Path]) -> dict[str, str]:
    environ = {**os.environ, "CACHEWARM_REDIS_URL": redis_url, "CACHEWARM_CONFIG": str(write_config(CONFIG)),
               "CACHEWARM_CLAIM_IDLE_MS": "300",
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return environ


@pytest.fixture
def sidecar(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", "cachewarm.worker.sidecar", "--no-metrics"], env=env, cwd=ROOT)
    yield proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(30)


def _consumer_child(sidecar: subprocess.Popen[bytes], client: redis.Redis) -> int:
    def child() -> int | None:
        kids = _children(sidecar.pid)
        return kids[0] if kids and any(n.endswith(f":{kids[0]}") for n in _consumers(client)) else None

    return wait_until(child, 30, "the sidecar's consumer process to join the group")


def test_the_consumer_runs_in_a_child_of_the_sidecar_and_stops_with_it(
        sidecar: subprocess.Popen[bytes], redis_client: redis.Redis, env: dict[str, str]) -> None:
    pid = _consumer_child(sidecar, redis_client)
    assert pid != sidecar.pid
    cache = Cache(settings=Settings.load(redis_url=env["CACHEWARM_REDIS_URL"], config=env["CACHEWARM_CONFIG"]))
    try:
        cache.set("product:1", {"p": 1})
        publish_invalidation("product:1", redis=redis_client)
        wait_until(lambda: not cache.exists("product:1"), 20, "the consumer process to apply the invalidation")
    finally:
        cache.close()
    sidecar.terminate()
    assert sidecar.wait(30) == 0
    wait_until(lambda: _gone(pid), 10, "the consumer process to stop with the sidecar")


def test_no_consumer_process_when_turned_off(redis_client: redis.Redis, env: dict[str, str]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "cachewarm.worker.sidecar", "--no-metrics"],
                            env={**env, "CACHEWARM_INVALIDATION_CONSUMER": "0"}, cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    assert proc.stderr is not None
    reading = threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True)
    reading.start()
    try:
        wait_until(lambda: any("consumer disabled" in line for line in lines), 30,
                   "the sidecar to say that the consumer is off", details=lambda: "".join(lines[-20:]))
        assert _children(proc.pid) == []
        assert _consumers(redis_client) == []
    finally:
        proc.terminate()
        proc.wait(30)
        reading.join(10)
        proc.stderr.close()


def test_a_killed_consumer_process_is_restarted_and_its_pending_entries_claimed(
        sidecar: subprocess.Popen[bytes], redis_client: redis.Redis, env: dict[str, str]) -> None:
    first = _consumer_child(sidecar, redis_client)
    cache = Cache(settings=Settings.load(redis_url=env["CACHEWARM_REDIS_URL"], config=env["CACHEWARM_CONFIG"]))
    try:
        keys = [f"product:{i}" for i in range(20)]
        for key in keys:
            cache.set(key, {"p": 1}, version=1)
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: _gone(first), 10, "the consumer process to die")
        # What it would have left had it died between reading and acknowledging: entries pending under its name.
        dead_name = next(n for n in _consumers(redis_client) if n.endswith(f":{first}"))
        for key in keys:
            publish_invalidation(key, version=2, redis=redis_client)
        redis_client.xreadgroup(CONSUMER_GROUP, dead_name, {INVALIDATION_STREAM: ">"}, count=100)
        assert redis_client.xpending(INVALIDATION_STREAM, CONSUMER_GROUP)["pending"] == len(keys)

        second = wait_until(lambda: next((c for c in _children(sidecar.pid) if c != first), None), 30,
                            "the sidecar to start the consumer process again")
        wait_until(lambda: redis_client.xpending(INVALIDATION_STREAM, CONSUMER_GROUP)["pending"] == 0, 30,
                   "the restarted consumer to claim and apply the dead one's entries")
        assert [key for key in keys if cache.exists(key)] == []
        assert {redis_client.hget(cache.layout.fence(key), "v") for key in keys} == {b"2"}
        assert not _gone(second)
    finally:
        cache.close()


def test_the_consumer_process_exits_when_the_sidecar_is_killed(
        sidecar: subprocess.Popen[bytes], redis_client: redis.Redis) -> None:
    pid = _consumer_child(sidecar, redis_client)
    sidecar.kill()
    sidecar.wait(5)
    wait_until(lambda: _gone(pid), 10, "the orphaned consumer process to exit")


def test_hot_keys_handed_over_a_pipe_coalesce_while_their_refresh_runs() -> None:
    started: list[list[str]] = []
    running: list[Future[Any]] = []
    lock = threading.Lock()

    def start(keys: list[str], watch: object) -> Future[Any]:
        future: Future[Any] = Future()
        with lock:
            started.append(keys)
            running.append(future)
        return future

    refresher = HotRefresher(start)
    read_fd, write_fd = os.pipe()
    reader = KeyPipeReader(read_fd, refresher).start()
    writer = KeyPipeWriter(write_fd)
    try:
        writer(["product:1", "product:2"])
        wait_until(lambda: sorted(k for batch in started for k in batch) == ["product:1", "product:2"], 10,
                   "the first refresh of both keys")
        for _ in range(5):  # five more events of product:1 while its refresh runs
            writer(["product:1"])
        writer(["product:3"])
        wait_until(lambda: any("product:3" in batch for batch in started), 10, "product:3 to be refreshed")
        assert sum(batch.count("product:1") for batch in started) == 1  # still running: not started again
        with lock:
            first = running[0]
        first.set_result(None)  # the refresh of product:1 (and 2) ends: exactly one more of product:1
        wait_until(lambda: sum(batch.count("product:1") for batch in started) == 2, 10,
                   "one more refresh of product:1")
        assert sum(batch.count("product:2") for batch in started) == 1
        with lock:
            pending = list(running)
        for future in pending:
            if not future.done():
                future.set_result(None)
        assert sum(batch.count("product:1") for batch in started) == 2
    finally:
        writer.close()
        reader.join(10)
    assert not reader.alive


def test_the_hand_off_never_blocks_the_consumer_and_loses_no_key() -> None:
    read_fd, write_fd = os.pipe()
    writer = KeyPipeWriter(write_fd)
    keys = [f"product:{i}:{'x' * 40}" for i in range(100_000)]  # ~5 MB: far more than a pipe holds
    writer(keys)  # the reader reads nothing yet: returns at once all the same
    writer(keys[:10])  # named again while waiting: coalesced
    assert writer.backlog > 0
    got: list[str] = []
    reader = KeyPipeReader(read_fd, got.extend).start()
    wait_until(lambda: (writer.flush(), writer.backlog == 0)[1], 30, "the backlog to drain")
    writer.close()
    reader.join(10)
    assert sorted(set(got)) == sorted(keys)
    assert len(got) <= len(keys) + 10


def test_a_dead_refresher_costs_the_early_refresh_only(
        redis_url: str, redis_client: redis.Redis, write_config: Callable[[str], Path]) -> None:
    """The refresher's process died: its end of the pipe is closed. The consumer still applies (deletes) first and
    hands the hot key over after, so the key's value is gone and the next reader loads the new one."""
    settings = Settings.load(redis_url=redis_url, config=write_config(CONFIG))
    cache = Cache(settings=settings)
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # the refresher is gone
    writer = KeyPipeWriter(write_fd)
    consumer = InvalidationConsumer(settings, name="c", on_hot_keys=writer, block_ms=50)
    try:
        consumer.ensure_group()
        cache.set("product:7", {"p": 1}, version=1)
        redis_client.sadd(cache.layout.pinned("product"), "product:7")  # hot: handed to the refresher
        publish_invalidation("product:7", version=2, redis=redis_client)
        assert consumer.poll(block_ms=50) == 1
        assert writer.broken and writer.dropped == 1
        assert not cache.exists("product:7")  # applied before the hand-off failed
        assert redis_client.hget(cache.layout.fence("product:7"), "v") == b"2"
        assert cache.get("product:7")["id"] == "7"  # the next reader loads it
    finally:
        consumer.close()
        writer.close()
        cache.close()


def test_the_fast_parse_of_the_common_entry_gives_what_the_full_checks_give(monkeypatch: pytest.MonkeyPatch) -> None:
    from cachewarm.invalidation import events

    numbers = [b"", b"0", b"7", b"0007", b"9007199254740991", b"9007199254740992", b"12345678901234567", b"-1",
               b"1.5", b" 1", "\u0663".encode(), b"\xff"]
    keys = [b"product:1", b"", b"a b", b"a\x7f", b"a\tb", "\u00e9".encode(), b"k" * 1024, b"k" * 1025, b"\xff"]
    extras: list[dict[bytes, bytes]] = [{}, {b"tag": b"t"}, {b"other": b"1"}, {b"key2": b"x"}]
    entries = [{b"key": key, **extra, **({b"version": v} if v is not None else {}), **({b"ts": t} if t else {})}
               for key in keys for extra in extras for v in [None, *numbers] for t in [b"", *numbers[:6]]]
    fast = [events.parse_entry("1-0", fields) for fields in entries]
    monkeypatch.setattr(events, "_parse_common", lambda eid, fields: None)
    full = [events.parse_entry("1-0", fields) for fields in entries]
    assert fast == full
    assert sum(isinstance(e, events.Event) for e in full) > 50  # both kinds of outcome were compared
    assert sum(isinstance(e, events.Rejected) for e in full) > 50


def test_the_consumer_process_counts_into_the_nodes_metrics(
        redis_client: redis.Redis, env: dict[str, str], tmp_path: Path) -> None:
    import urllib.request

    from cachewarm.demo.redis_server import free_port

    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "cachewarm.worker.sidecar"], cwd=ROOT,
                            env={**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                                 "CACHEWARM_METRICS_PORT": str(port)})
    cache = Cache(settings=Settings.load(redis_url=env["CACHEWARM_REDIS_URL"], config=env["CACHEWARM_CONFIG"]))
    try:
        _consumer_child(proc, redis_client)
        cache.set("product:3", {"p": 1})
        publish_invalidation("product:3", redis=redis_client)
        wait_until(lambda: not cache.exists("product:3"), 20, "the consumer process to apply the invalidation")

        def applied() -> float:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
            line = next((ln for ln in text.splitlines()
                         if ln.startswith("cachewarm_invalidations_total{") and 'kind="key"' in ln
                         and 'outcome="applied"' in ln), "")
            return float(line.rsplit(" ", 1)[1]) if line else 0.0

        wait_until(applied, 20, "the sidecar's /metrics to count the consumer process's invalidation",
                   ignore=(OSError,))
    finally:
        cache.close()
        proc.terminate()
        proc.wait(30)
