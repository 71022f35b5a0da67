"""End to end: real `celery worker` and `celery beat` processes, a real redis-server (or a Redis Cluster as the cache,
the broker staying the redis-server), an HTTP source on a socket."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from cachewarm import Cache, Settings
from cachewarm.demo.redis_server import RedisServer
from cachewarm.demo.source import SourceServer
from cachewarm.redis_layer import envelope
from cachewarm.redis_layer.keys import KeyLayout
from tests.support.keyspaces import product_keyspace, write_config
from tests.support.processes import Processes, cluster_env
from tests.support.redis_cluster import raw_client, topologies
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
L = KeyLayout()


@dataclass
class Cluster:
    """Beat and worker processes over a private redis-server (the broker; the cache too unless `topology` is
    "cluster") and source."""

    tmp: Path
    server: RedisServer
    source: SourceServer
    procs: Processes
    cache_url: str
    topology: str

    @property
    def redis(self) -> redis.Redis:
        return raw_client(self.cache_url, self.topology)

    def settings(self) -> Settings:
        # Readers and workers must agree on the half-life: it is the unit of the scores in hot:S.
        return Settings.load(redis_url=self.cache_url, redis_cluster=self.topology == "cluster",
                             config=self.tmp / "cachewarm.toml",
                             hot_half_life=float(self.procs.env["CACHEWARM_HOT_HALF_LIFE"]),
                             hot_threshold=float(self.procs.env["CACHEWARM_HOT_THRESHOLD"]))

    def scanned(self) -> bool:
        """Whether the worker ran a scan triggered by beat (both are up)."""
        client = self.redis
        try:
            return bool(client.hexists(L.refresh_stats, "hot_keys:product"))
        finally:
            client.close()


@pytest.fixture
def make_cluster(tmp_path: Path, source: SourceServer, topology: str,
                 request: pytest.FixtureRequest) -> Iterator[Callable[..., Cluster]]:
    """A cluster over the `source` fixture (its latency set by the test's `source` mark)."""
    made: list[tuple[Cluster, RedisServer]] = []

    def make(*, ttl: float, refresh_ahead: float, threshold: float = 5.0, half_life: float = 1.0) -> Cluster:
        server = RedisServer().start()
        cache_url = request.getfixturevalue("redis_url") if topology == "cluster" else server.url(0)
        config = write_config(tmp_path, product_keyspace(source.url, ttl=ttl, refresh_ahead=refresh_ahead))
        env = cluster_env(tmp_path, redis_url=cache_url, broker_url=server.url(1), config=config,
                          CACHEWARM_SCAN_INTERVAL="0.25", CACHEWARM_HOT_THRESHOLD=str(threshold),
                          CACHEWARM_HOT_HALF_LIFE=str(half_life),
                          CACHEWARM_REDIS_CLUSTER=str(topology == "cluster").lower())
        cluster = Cluster(tmp_path, server, source, Processes(tmp_path, env), cache_url, topology)
        made.append((cluster, server))
        return cluster

    yield make
    for cluster, server in made:
        cluster.procs.stop()
        server.cleanup()


def _read_loop(cache: Cache, key: str, stop: threading.Event, interval: float,
               hits: list[bool]) -> None:
    while not stop.is_set():
        hits.append(cache.lookup(key).hit)
        time.sleep(interval)


@topologies
@pytest.mark.source(latency=0.05)
def test_hot_key_never_misses_and_a_cold_key_stops_being_refreshed(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(ttl=2, refresh_ahead=1)
    cluster.procs.beat()
    cluster.procs.worker()
    wait_until(cluster.scanned, 25, "a scan triggered by beat", details=cluster.procs.logs, interval=0.1)
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
        assert all(hot_hits[1:]), f"{hot_hits.count(False) - 1} misses after the first load\n{cluster.procs.logs()}"
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


@pytest.mark.source(latency=1.5)
def test_kill_9_mid_batch_loses_no_refresh(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(ttl=6, refresh_ahead=3)
    keys = [f"product:{i}" for i in range(20)]
    client = cluster.redis
    client.sadd(L.pinned("product"), *keys)
    cluster.procs.beat()
    worker = cluster.procs.worker()
    wait_until(lambda: cluster.source.stats()["in_flight"], 25, "a batch being fetched", details=cluster.procs.logs,
               interval=0.02)
    cluster.procs.kill(worker)                           # kill -9 of the worker and its pool
    killed_at_ms = int(time.time() * 1000)
    time.sleep(0.5)
    assert all(client.get(L.value(k)) is None for k in keys), "the killed batch must not have completed"
    cluster.procs.worker()

    def stale() -> list[str]:
        return [k for k in keys if not ((raw := client.get(L.value(k))) is not None
                                        and envelope.decode(raw).fetched_ms > killed_at_ms)]

    wait_until(lambda: not stale(), 25, "every key refreshed after the kill",
               details=lambda: f"{len(stale())} keys never refreshed\n{cluster.procs.logs()}", interval=0.1)
    # Once caught up, the pinned keys stay fresh (each refreshed before it expires).
    time.sleep(4)
    assert all(Cache(settings=cluster.settings()).exists(k) for k in keys)
    client.close()
