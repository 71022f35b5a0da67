"""cachewarm installed into a team's Celery app (tests/support/team_app.py), on one Redis broker with the team's
own task, beat entry and plain worker: real `celery worker` / `celery beat` processes.

Every team task runs on the team's worker, every refresh and scan on the cachewarm worker (started on cachewarm's
queues), no message is rejected as unknown, the team's worker runs no cachewarm sidecar, hot keys stay warm
(hot-set hit ratio >= 99.5%), and a stray cachewarm beat next to the team's beat is harmless (claims: each hot key
is refreshed about once per ttl - refresh_ahead, not twice).
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from cachewarm import Cache, Settings
from cachewarm.demo.redis_server import RedisServer
from cachewarm.demo.source import SourceServer
from cachewarm.redis_layer.keys import KeyLayout
from tests.support.keyspaces import product_keyspace, write_config
from tests.support.processes import Processes, cluster_env
from tests.support.team_app import RAN_KEY
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]
L = KeyLayout()
TEAM = "tests.support.team_app"
HOT_KEYS = [f"product:{i}" for i in range(1, 11)]
READ_SECONDS = 10.0
TTL, AHEAD = 2.0, 1.0
TEAM_TASKS = 40


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


def _celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", *args]


def _read_loop(cache: Cache, key: str, stop: threading.Event, hits: list[bool]) -> None:
    while not stop.is_set():
        hits.append(cache.lookup(key).hit)
        time.sleep(0.02)


def _tasks_run(log: str, name: str) -> int:
    return len(re.findall(rf"Task {re.escape(name)}\[[^\]]+\] succeeded", log))


@pytest.mark.source(latency=0.05)
def test_team_app_with_cachewarm_installed_on_one_broker(server: RedisServer, source: SourceServer,
                                                         tmp_path: Path) -> None:
    config = write_config(tmp_path, product_keyspace(source.url, ttl=TTL, refresh_ahead=AHEAD))
    env = cluster_env(tmp_path, redis_url=server.url(0), broker_url=server.url(1), config=config,
                      CACHEWARM_SCAN_INTERVAL="0.25", CACHEWARM_HOT_THRESHOLD="5", CACHEWARM_HOT_HALF_LIFE="1",
                      TEAM_BROKER_URL=server.url(1), TEAM_RECORD_URL=server.url(0))
    procs = Processes(tmp_path, env)
    client = redis.Redis.from_url(server.url(0))
    broker = redis.Redis.from_url(server.url(1))
    sender = Celery("team-client", broker=server.url(1), set_as_current=False,
                    config_source={"task_serializer": "json", "accept_content": ["json"]})
    settings = Settings.load(redis_url=server.url(0), config=config, hot_half_life=1.0, hot_threshold=5.0)
    cache = Cache(settings=settings)
    try:
        procs.spawn(*_celery(TEAM, "beat", "--loglevel", "INFO", "-s", str(tmp_path / "team-beat.schedule")),
                    log="team-beat.log")
        procs.beat(log="stray-beat.log")  # `celery -A cachewarm.worker beat`, by mistake: must be harmless
        common = ("--loglevel", "INFO", "--pool", "prefork", "--concurrency", "2", "--without-gossip",
                  "--without-mingle", "--without-heartbeat")
        procs.spawn(*_celery(TEAM, "worker", "-n", "cachewarm@%h", "-Q", "cachewarm.refresh,cachewarm.scan",
                             *common), log="cachewarm-worker.log")
        procs.spawn(*_celery(TEAM, "worker", "-n", "team@%h", *common), log="team-worker.log")
        wait_until(lambda: client.hexists(L.refresh_stats, "hot_keys:product"), 30, "a scan by the cachewarm worker",
                   details=procs.logs, interval=0.1)

        for n in range(TEAM_TASKS):
            sender.send_task("team.tick", args=[n])
        stop = threading.Event()
        hits: dict[str, list[bool]] = {key: [] for key in HOT_KEYS}
        readers = [threading.Thread(target=_read_loop, args=(cache, key, stop, hits[key])) for key in HOT_KEYS]
        requests_before = {key: source.stats()["by_path"].get(f"/products/{key.split(':')[1]}", 0)
                           for key in HOT_KEYS}
        for thread in readers:
            thread.start()
        try:
            time.sleep(READ_SECONDS)
        finally:
            stop.set()
            for thread in readers:
                thread.join()

        # Hot keys stay warm: every read after a key's first is a hit, or nearly.
        reads = sum(len(h) - 1 for h in hits.values())
        misses = sum(h[1:].count(False) for h in hits.values())
        ratio = 1 - misses / reads
        print(f"\nshared broker: hot-set hit ratio {ratio:.4%} ({reads} reads after the first, {misses} misses)")
        assert ratio >= 0.995, f"hit ratio {ratio:.4%} ({misses} misses of {reads})\n{procs.logs()}"

        # Two beats, one refresh per period: each hot key fetched about once per (ttl - refresh_ahead).
        by_path = source.stats()["by_path"]
        fetched = {key: by_path.get(f"/products/{key.split(':')[1]}", 0) - requests_before[key] for key in HOT_KEYS}
        most = READ_SECONDS / (TTL - AHEAD) + 3
        print(f"source requests per hot key in {READ_SECONDS:g} s, two beats: {sorted(fetched.values())}")
        assert max(fetched.values()) <= most, f"refreshed more than once per period: {fetched}"
        assert min(fetched.values()) >= READ_SECONDS / TTL, f"hot keys not refreshed ahead: {fetched}"
        assert "Sending due task cachewarm.scan" in procs.log("team-beat.log")
        assert "Sending due task cachewarm.scan" in procs.log("stray-beat.log")

        # Every team task on the team's worker; every cachewarm task on the cachewarm worker.
        wait_until(lambda: client.llen(RAN_KEY) >= TEAM_TASKS + 5, 20, "the team's tasks and beat ticks to run",
                   details=procs.logs)
        ran_on = {node.decode().split("@")[0] for node in client.lrange(RAN_KEY, 0, -1)}
        assert ran_on == {"team"}, ran_on
        team_log, cw_log = procs.log("team-worker.log"), procs.log("cachewarm-worker.log")
        assert _tasks_run(cw_log, "cachewarm.refresh") > 0 and _tasks_run(cw_log, "cachewarm.scan") > 0
        # (Both banners list every task of the app: count received tasks only.)
        assert "Received task: team.tick" not in cw_log
        assert "Received task: cachewarm." not in team_log, team_log[-3000:]
        # No message rejected as unknown, no routing error, anywhere.
        for name in ("team-worker.log", "cachewarm-worker.log", "team-beat.log", "stray-beat.log"):
            text = procs.log(name)
            assert "Received unregistered task" not in text and "KeyError" not in text, f"{name}:\n{text[-3000:]}"
        # cachewarm's services run on its worker only; both workers say what install() set.
        assert "cachewarm sidecar started" in cw_log and "cachewarm sidecar started" not in team_log
        for text in (cw_log, team_log):
            assert "cachewarm installed into Celery app 'team': set task_routes" in text
        assert broker.llen("celery") == 0, "a message nobody consumes was left in the team's queue"
    finally:
        procs.stop()
        cache.close()
        sender.close()
        client.close()
        broker.close()
