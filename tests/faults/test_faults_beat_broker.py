"""Scenarios 5 and 2: two beats at once (no key refreshed twice in a period), and the broker down for a while
(worker and beat resume by themselves; the refreshes that fell due meanwhile are done soon after).

The cluster: a cache Redis, a broker Redis behind a fault proxy, the demo source recording when each item is
read, real `celery worker` and `celery beat` processes. Keys are made hot by reads, then the readers stop (the
half-life is long, so the keys stay hot): every source request after that is a worker's refresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from cachewarm import Cache, Settings
from cachewarm.demo.redis_server import RedisServer
from cachewarm.demo.source import SourceServer
from cachewarm.redis_layer.keys import KeyLayout
from tests.faults._support import close_pairs, requests_between
from tests.support.fault_proxy import FaultProxy
from tests.support.keyspaces import product_keyspace
from tests.support.processes import Processes, cluster_env
from tests.support.recording import RecordingState, recorded
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120), pytest.mark.source(latency=0.01, recording=True)]

KEYS = [f"product:{i}" for i in range(20)]
TTL, AHEAD, SCAN = 3.0, 1.5, 0.25
PERIOD = TTL - AHEAD  # a refreshed key is due again this long after its refresh
L = KeyLayout()


@dataclass
class Cluster:
    cache_server: RedisServer
    broker_proxy: FaultProxy
    source: SourceServer
    state: RecordingState
    procs: Processes
    settings: Settings

    def warm(self) -> None:
        with Cache(settings=self.settings) as cache:
            for _ in range(5):
                for key in KEYS:
                    assert cache.get(key) is not None
            cache.flush_stats()

    def fresh(self) -> int:
        client = redis.Redis.from_url(self.cache_server.url(0))
        now_ms = time.time() * 1000
        raws = client.mget([L.value(k) for k in KEYS])
        client.close()
        return sum(1 for raw in raws if raw is not None and int(raw[:13]) > now_ms)

    def scanned(self) -> bool:
        client = redis.Redis.from_url(self.cache_server.url(0))
        try:
            return bool(client.hexists(L.refresh_stats, "hot_keys:product"))
        finally:
            client.close()


@pytest.fixture
def cluster(tmp_path: Path, write_config: Callable[[str], Path], source: SourceServer) -> Iterator[Cluster]:
    state = recorded(source)
    config = write_config(product_keyspace(source.url, ttl=TTL, refresh_ahead=AHEAD, max_stale=30))
    with RedisServer() as cache_server, RedisServer() as broker_server, \
            FaultProxy("127.0.0.1", broker_server.port) as proxy:
        env = cluster_env(tmp_path, redis_url=cache_server.url(0), broker_url=f"redis://127.0.0.1:{proxy.port}/0",
                          config=config, CACHEWARM_SCAN_INTERVAL=str(SCAN), CACHEWARM_HOT_HALF_LIFE="60",
                          CACHEWARM_HOT_THRESHOLD="1")
        settings = Settings.load(redis_url=cache_server.url(0), config=config, hot_half_life=60.0)
        procs = Processes(tmp_path, env)
        try:
            yield Cluster(cache_server, proxy, source, state, procs, settings)
        finally:
            procs.stop()


def test_two_beats_refresh_no_key_twice_in_a_period(cluster: Cluster) -> None:
    procs = cluster.procs
    procs.worker(concurrency=2)
    procs.beat(log="beat1.log")
    procs.beat(log="beat2.log")
    wait_until(cluster.scanned, 40, "a first scan", details=procs.logs)
    cluster.warm()
    time.sleep(2 * PERIOD)
    start = time.monotonic()
    time.sleep(8.0)
    window = requests_between(cluster.state, start, time.monotonic())
    both_beats = ("Sending due task" in procs.log("beat1.log"), "Sending due task" in procs.log("beat2.log"))
    refreshes = sum(len(ts) for ts in window.values())
    duplicates = close_pairs(window, PERIOD / 2)
    print(f"\ntwo beats, 8 s: {refreshes} refreshes of {len(KEYS)} keys "
          f"({refreshes / len(KEYS):.1f} per key, period {PERIOD} s), duplicates {duplicates}")
    assert both_beats == (True, True), procs.logs()
    assert duplicates == 0, {k: [round(t - start, 2) for t in v] for k, v in window.items()}
    assert all(len(window.get(key.split(":")[1], [])) >= 2 for key in KEYS), window  # about 5 expected


def test_broker_down_then_back_worker_and_beat_resume(cluster: Cluster) -> None:
    procs = cluster.procs
    worker, beat = procs.worker(concurrency=2), procs.beat()
    wait_until(cluster.scanned, 40, "a first scan", details=procs.logs)
    cluster.warm()
    wait_until(lambda: all(len(cluster.state.times[k.split(":")[1]]) >= 2 for k in KEYS), 20,
               "every key read twice by the source", details=procs.logs)

    cluster.broker_proxy.set_mode("reset")
    down = 8.0  # shortened from the 10 s
    time.sleep(down)
    assert cluster.fresh() == 0, "keys stayed fresh although nothing could refresh them"
    cluster.broker_proxy.set_mode("pass")
    back = time.monotonic()

    def refreshed_after_back() -> bool:
        return all(any(t >= back for t in cluster.state.times[k.split(":")[1]]) for k in KEYS)

    wait_until(refreshed_after_back, 60, "every key refreshed after the broker came back", details=procs.logs)
    wait_until(lambda: cluster.fresh() == len(KEYS), 30, "every key fresh", details=procs.logs)
    fresh = time.monotonic() - back
    after = [min(t for t in cluster.state.times[k.split(":")[1]] if t >= back) - back for k in KEYS]
    print(f"\nbroker down {down:.0f} s: first refresh {min(after):.2f} s after it came back, every due key "
          f"refreshed by {max(after):.2f} s, all fresh by {fresh:.2f} s (scan period {SCAN} s); lost 0")
    assert worker.poll() is None and beat.poll() is None, procs.logs()
