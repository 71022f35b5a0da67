"""End to end: real `celery worker` and `celery beat` processes, a real redis-server, an HTTP source on a socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from cachewarm import Cache, Settings, envelope
from cachewarm.demo.redis_server import RedisServer
from cachewarm.demo.source import SourceServer
from cachewarm.keys import KeyLayout

pytestmark = pytest.mark.slow
L = KeyLayout()


@dataclass
class Cluster:
    """Beat and worker processes over a private redis-server and source."""

    tmp: Path
    server: RedisServer
    source: SourceServer
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.server.url(0))

    def settings(self) -> Settings:
        # Readers and workers must agree on the half-life: it is the unit of the scores in hot:S.
        return Settings.load(redis_url=self.server.url(0), config=self.tmp / "cachewarm.toml",
                             hot_half_life=float(self.env["CACHEWARM_HOT_HALF_LIFE"]),
                             hot_threshold=float(self.env["CACHEWARM_HOT_THRESHOLD"]))

    def _spawn(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        out = open(self.tmp / log, "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "cachewarm.worker", *args], env=self.env,
                                cwd=self.tmp, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.procs.append(proc)
        return proc

    def start_worker(self) -> subprocess.Popen[bytes]:
        return self._spawn("worker", "--loglevel", "INFO", "--pool", "prefork", "--concurrency", "1",
                           "--without-gossip", "--without-mingle", "--without-heartbeat", log="worker.log")

    def start_beat(self) -> subprocess.Popen[bytes]:
        return self._spawn("beat", "--loglevel", "INFO", "-s", str(self.tmp / "beat-schedule"), log="beat.log")

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc, signal.SIGTERM)

    def wait_for_scans(self, timeout: float = 25.0) -> None:
        """Until the worker ran a scan triggered by beat (both are up)."""
        client = self.redis
        deadline = time.monotonic() + timeout
        while not client.hexists(L.refresh_stats, "hot_keys:product"):
            if time.monotonic() > deadline:
                raise AssertionError("no scan ran:\n" + self.logs())
            time.sleep(0.1)
        client.close()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.tmp.glob("*.log"))


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[tuple[Cluster, RedisServer, SourceServer]] = []

    def make(*, latency: float, ttl: float, refresh_ahead: float, threshold: float = 5.0,
             half_life: float = 1.0) -> Cluster:
        server = RedisServer().start()
        source = SourceServer(latency=latency).start()
        (tmp_path / "cachewarm.toml").write_text(textwrap.dedent(f"""
            [keyspaces.product]
            pattern = "product:{{id}}"
            source = "{source.url}/products/{{id}}"
            ttl = {ttl}
            refresh_ahead = {refresh_ahead}
            max_stale = 10
        """))
        env = {**os.environ, "CACHEWARM_REDIS_URL": server.url(0), "CACHEWARM_BROKER_URL": server.url(1),
               "CACHEWARM_CONFIG": str(tmp_path / "cachewarm.toml"), "CACHEWARM_SCAN_INTERVAL": "0.25",
               "CACHEWARM_HOT_THRESHOLD": str(threshold), "CACHEWARM_HOT_HALF_LIFE": str(half_life),
               "CACHEWARM_METRICS_PORT": "0"}
        cluster = Cluster(tmp_path, server, source, env)
        made.append((cluster, server, source))
        return cluster

    yield make
    for cluster, server, source in made:
        cluster.stop()
        source.stop()
        server.cleanup()


def _read_loop(cache: Cache, key: str, stop: threading.Event, interval: float,
               hits: list[bool]) -> None:
    while not stop.is_set():
        hits.append(cache.lookup(key).hit)
        time.sleep(interval)


def test_hot_key_never_misses_and_a_cold_key_stops_being_refreshed(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(latency=0.05, ttl=2, refresh_ahead=1)
    cluster.start_beat()
    cluster.start_worker()
    cluster.wait_for_scans()
    cache = Cache(settings=cluster.settings())
    stop_hot, stop_cold = threading.Event(), threading.Event()
    hot_hits: list[bool] = []
    cold_hits: list[bool] = []
    threads = [threading.Thread(target=_read_loop, args=(cache, "product:1", stop_hot, 0.02, hot_hits)),
               threading.Thread(target=_read_loop, args=(cache, "product:2", stop_cold, 0.02, cold_hits))]
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        stop_cold.set()           # product:2 is no longer read from here on
        time.sleep(7)             # product:1 lives through five TTLs
    finally:
        stop_hot.set()
        stop_cold.set()
        for t in threads:
            t.join()
    try:
        assert hot_hits[0] is False
        assert all(hot_hits[1:]), f"{hot_hits.count(False) - 1} misses after the first load\n{cluster.logs()}"
        # The cold key: once it has cooled down, no further source requests for it.
        requests_then = cluster.source.stats()["by_path"].get("/products/2", 0)
        time.sleep(3)
        assert cluster.source.stats()["by_path"].get("/products/2", 0) == requests_then
        assert not cache.exists("product:2")
        # ... while the hot key was refreshed about once per (ttl - refresh_ahead), not once per read.
        hot_requests = cluster.source.stats()["by_path"]["/products/1"]
        assert 3 <= hot_requests < len(hot_hits) / 10
    finally:
        cache.close()


def test_kill_9_mid_batch_loses_no_refresh(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(latency=1.5, ttl=6, refresh_ahead=3)
    keys = [f"product:{i}" for i in range(20)]
    client = cluster.redis
    client.sadd(L.pinned("product"), *keys)
    cluster.start_beat()
    worker = cluster.start_worker()
    deadline = time.monotonic() + 25
    while cluster.source.stats()["in_flight"] == 0:      # a batch is being fetched
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.02)
    cluster.kill(worker)                                 # kill -9 of the worker and its pool
    killed_at_ms = int(time.time() * 1000)
    time.sleep(0.5)
    assert all(client.get(L.value(k)) is None for k in keys), "the killed batch must not have completed"
    cluster.start_worker()
    deadline = time.monotonic() + 25
    while True:
        raws = [client.get(L.value(k)) for k in keys]
        fresh = [raw is not None and envelope.decode(raw).fetched_ms > killed_at_ms for raw in raws]
        if all(fresh):
            break
        assert time.monotonic() < deadline, f"{fresh.count(False)} keys never refreshed\n{cluster.logs()}"
        time.sleep(0.1)
    # Once caught up, the pinned keys stay fresh (each refreshed before it expires).
    time.sleep(4)
    assert all(Cache(settings=cluster.settings()).exists(k) for k in keys)
    client.close()
