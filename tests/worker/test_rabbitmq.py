"""RabbitMQ as the broker (`CACHEWARM_BROKER_URL=amqp://...`): the scan's backpressure, end-to-end warming, kill -9
of a worker mid-batch, and a broker restart, all against a private rabbitmq-server (tests/support/rabbitmq.py).

Each test gets queues of its own names (CACHEWARM_REFRESH_QUEUE / _SCAN_QUEUE) on the session's node, so nothing a
test leaves in a queue reaches the next one.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from cachewarm import Cache, Settings
from cachewarm.demo.redis_server import RedisServer
from cachewarm.demo.source import SourceServer
from cachewarm.redis_layer import envelope
from cachewarm.redis_layer.keys import KeyLayout
from cachewarm.tasks import backlog
from cachewarm.tasks.scan import scan as scan_task
from cachewarm.worker.celery_app import create_app
from tests.support.keyspaces import product_keyspace, write_config
from tests.support.processes import Processes, cluster_env
from tests.support.rabbitmq import RabbitMQ, rabbitmq  # noqa: F401 - the session fixture
from tests.support.recording import RecordingState, recorded
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]
L = KeyLayout()


@dataclass
class Cluster:
    """A cache redis-server, the session's RabbitMQ (queues of this test's own), a source, celery processes."""

    tmp: Path
    server: RedisServer
    broker: RabbitMQ
    source: SourceServer
    procs: Processes

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.server.url(0))

    def settings(self) -> Settings:
        env = self.procs.env
        return Settings.load(redis_url=self.server.url(0), broker_url=self.broker.url,
                             config=self.tmp / "cachewarm.toml", hot_half_life=float(env["CACHEWARM_HOT_HALF_LIFE"]),
                             hot_threshold=float(env["CACHEWARM_HOT_THRESHOLD"]),
                             refresh_queue=env["CACHEWARM_REFRESH_QUEUE"], scan_queue=env["CACHEWARM_SCAN_QUEUE"])

    def scanned(self) -> bool:
        client = self.redis
        try:
            return bool(client.hexists(L.refresh_stats, "hot_keys:product"))
        finally:
            client.close()


@pytest.fixture
def make_cluster(tmp_path: Path, source: SourceServer, rabbitmq: RabbitMQ) -> Iterator[Callable[..., Cluster]]:  # noqa: F811
    made: list[Cluster] = []

    def make(*, ttl: float, refresh_ahead: float, threshold: float = 5.0, half_life: float = 1.0,
             **extra: str) -> Cluster:
        server = RedisServer().start()
        config = write_config(tmp_path, product_keyspace(source.url, ttl=ttl, refresh_ahead=refresh_ahead))
        name = f"t{uuid.uuid4().hex[:8]}"
        env = cluster_env(tmp_path, redis_url=server.url(0), broker_url=rabbitmq.url, config=config,
                          CACHEWARM_SCAN_INTERVAL="0.25", CACHEWARM_HOT_THRESHOLD=str(threshold),
                          CACHEWARM_HOT_HALF_LIFE=str(half_life), CACHEWARM_REFRESH_QUEUE=f"{name}.refresh",
                          CACHEWARM_SCAN_QUEUE=f"{name}.scan", **extra)
        cluster = Cluster(tmp_path, server, rabbitmq, source, Processes(tmp_path, env))
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.procs.stop()
        cluster.server.cleanup()


def test_scan_never_floods_a_rabbitmq_queue(tmp_path: Path, redis_url: str, rabbitmq: RabbitMQ) -> None:  # noqa: F811
    """Item 1 on AMQP: the scan reads the refresh queue's length from RabbitMQ and fills it (the first scan: up to
    FIRST_BATCHES), never beyond, however many keys are due; with no worker taking any, later scans add none. (A
    length read as 0, the old Redis-list count, would add batches every scan.)"""
    config = write_config(tmp_path, product_keyspace("http://127.0.0.1:9", ttl=60, refresh_ahead=30))
    name = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings.load(redis_url=redis_url, broker_url=rabbitmq.url, config=config, refresh_batch_size=10,
                             refresh_queue=f"{name}.refresh", scan_queue=f"{name}.scan", scan_interval=30.0)
    app = create_app(settings)
    client = redis.Redis.from_url(redis_url)
    client.sadd(L.pinned("product"), *(f"product:{i}" for i in range(1000)))  # 100 batches due
    length = backlog.QueueLength(app, settings.refresh_queue)
    try:
        task = SimpleNamespace(app=app)
        enqueued = [scan_task(task)]
        # Published on another connection: RabbitMQ counts them once routed (no ordering across connections).
        wait_until(lambda: length.read() == backlog.FIRST_BATCHES, 10, "the first scan's batches queued",
                   interval=0.05)
        enqueued += [scan_task(task) for _ in range(2)]
        assert enqueued == [backlog.FIRST_BATCHES * 10, 0, 0]
        time.sleep(0.2)
        assert length.read() == backlog.FIRST_BATCHES
        assert backlog.measure(app, settings, client).keys == 0
        assert backlog.room(app, settings) == (backlog.MAX_QUEUED_BATCHES - backlog.FIRST_BATCHES) * 10
    finally:
        with app.connection_for_write() as conn:
            channel = conn.channel()
            for queue in (settings.refresh_queue, settings.scan_queue):
                channel.queue_delete(queue)
        length.close()
        app.close()
        client.close()


def _read_loop(cache: Cache, key: str, stop: threading.Event, hits: list[bool]) -> None:
    while not stop.is_set():
        hits.append(cache.lookup(key).hit)
        time.sleep(0.02)


@pytest.mark.source(latency=0.05)
def test_hot_key_never_misses_with_rabbitmq_as_broker(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(ttl=2, refresh_ahead=1)
    cluster.procs.beat()
    cluster.procs.worker()
    wait_until(cluster.scanned, 40, "a scan sent by beat over RabbitMQ", details=cluster.procs.logs, interval=0.1)
    hits: list[bool] = []
    stop = threading.Event()
    with Cache(settings=cluster.settings()) as cache:
        reader = threading.Thread(target=_read_loop, args=(cache, "product:1", stop, hits))
        reader.start()
        try:
            time.sleep(6)  # three TTLs
        finally:
            stop.set()
            reader.join()
    requests = cluster.source.stats()["by_path"]["/products/1"]
    assert hits[0] is False
    assert all(hits[1:]), f"{hits.count(False) - 1} misses after the first load\n{cluster.procs.logs()}"
    assert 3 <= requests < len(hits) / 10, requests
    assert "cannot read the length" not in cluster.procs.log("worker.log"), cluster.procs.logs()


@pytest.mark.source(latency=1.5)
def test_kill_9_mid_batch_loses_nothing_on_rabbitmq(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(ttl=6, refresh_ahead=3)
    keys = [f"product:{i}" for i in range(20)]
    client = cluster.redis
    client.sadd(L.pinned("product"), *keys)
    cluster.procs.beat()
    worker = cluster.procs.worker()
    wait_until(lambda: cluster.source.stats()["in_flight"], 40, "a batch being fetched", details=cluster.procs.logs,
               interval=0.02)
    cluster.procs.kill(worker)  # kill -9 of the worker and its pool: its unacked message goes back to the queue
    killed_at_ms = int(time.time() * 1000)
    time.sleep(0.5)
    assert all(client.get(L.value(k)) is None for k in keys), "the killed batch must not have completed"
    restarted = time.monotonic()
    cluster.procs.worker(log="worker2.log")

    def stale() -> list[str]:
        return [k for k in keys if not ((raw := client.get(L.value(k))) is not None
                                        and envelope.decode(raw).fetched_ms > killed_at_ms)]

    wait_until(lambda: not stale(), 40, "every key refreshed after the kill",
               details=lambda: f"{len(stale())} keys never refreshed\n{cluster.procs.logs()}", interval=0.1)
    print(f"\nRabbitMQ, kill -9 mid-batch: all {len(keys)} keys refreshed {time.monotonic() - restarted:.1f} s "
          f"after the new worker started (source latency 1.5 s); lost 0")
    time.sleep(2)  # caught up, the pinned keys stay fresh
    with Cache(settings=cluster.settings()) as cache:
        assert all(cache.exists(k) for k in keys)
    client.close()


KEYS = [f"product:{i}" for i in range(20)]


@pytest.mark.source(latency=0.01, recording=True)
def test_broker_restart_worker_and_beat_resume_by_themselves(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(ttl=3, refresh_ahead=1.5, threshold=1.0, half_life=60.0)
    state: RecordingState = recorded(cluster.source)
    procs = cluster.procs
    worker, beat = procs.worker(concurrency=2), procs.beat()
    wait_until(cluster.scanned, 40, "a first scan", details=procs.logs)
    with Cache(settings=cluster.settings()) as cache:
        for _ in range(5):
            for key in KEYS:
                assert cache.get(key) is not None
        cache.flush_stats()
    wait_until(lambda: all(len(state.times[k.split(":")[1]]) >= 2 for k in KEYS), 20,
               "every key refreshed by a worker", details=procs.logs)

    down = cluster.broker.restart()  # rabbitmqctl stop, then a new rabbitmq-server on the same ports and data
    back = time.monotonic()

    def refreshed_after_back() -> bool:
        return all(any(t >= back for t in state.times[k.split(":")[1]]) for k in KEYS)

    wait_until(refreshed_after_back, 40, "every key refreshed after the broker came back",
               details=lambda: procs.logs() + cluster.broker.log())
    after = [min(t for t in state.times[k.split(":")[1]] if t >= back) - back for k in KEYS]
    print(f"\nRabbitMQ restart ({down:.1f} s from `rabbitmqctl stop` to up again): first refresh {min(after):.2f} s "
          f"after it was up, every key refreshed by {max(after):.2f} s (scan period 0.25 s, TTL 3 s)")
    assert worker.poll() is None and beat.poll() is None, procs.logs()
