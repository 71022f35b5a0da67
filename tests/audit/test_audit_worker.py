"""The auditor on real servers: a redis-server, the demo product API over a socket, real Celery workers whose
sidecars run the auditor. A writer that changes the source without publishing; events held back in the stream;
a correct writer at a steady rate; the audit budget as the source sees it."""

from __future__ import annotations

import random
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from cachewarm import Cache, Settings, publish_invalidation
from cachewarm.audit import ledger
from cachewarm.audit.checking import USER_AGENT
from cachewarm.demo.redis_server import RedisServer, free_port
from cachewarm.demo.source import SourceServer
from cachewarm.demo.source_state import SourceState
from cachewarm.redis_layer.keys import CONSUMER_GROUP, INVALIDATION_STREAM, KeyLayout
from tests.support.hot import hot_members
from tests.support.keyspaces import product_keyspace
from tests.support.processes import Processes, cluster_env
from tests.support.waiting import wait_until

LAYOUT = KeyLayout()
pytestmark = pytest.mark.timeout(240)  # worker nodes start, and the auditor goes round its keys at its budget


class AuditCounting(SourceState):
    """The demo source, also noting when each of the auditor's requests came (by its User-Agent)."""

    def __init__(self, **kwargs: Any) -> None:
        self.audit_times: list[float] = []
        super().__init__(**kwargs)

    async def read(self, request: web.Request) -> web.Response:
        if request.headers.get("user-agent", "").startswith(USER_AGENT):
            self.audit_times.append(time.monotonic())
        return await super().read(request)


@pytest.fixture
def api() -> Iterator[SourceServer]:
    server = SourceServer(latency=0.0, items=1000)
    server.state = AuditCounting(items=1000, latency=0.0)
    with server:
        yield server


class Node:
    """A worker node (celery worker; its sidecar audits) with its /metrics endpoint."""

    def __init__(self, procs: Processes, name: str, port: int, env: dict[str, str]) -> None:
        self.procs, self.port = procs, port
        self.proc = procs.spawn(sys.executable, "-m", "celery", "-A", "cachewarm.worker", "worker", "--loglevel",
                                "INFO", "--pool", "prefork", "--concurrency", "1", "-n", f"{name}@%h",
                                "--without-gossip", "--without-mingle", "--without-heartbeat", log=f"{name}.log",
                                env=env)

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def total(self, name: str, **labels: str) -> float:
        return sum(v for (n, ls), v in self.samples().items()
                   if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))

    def ready(self) -> None:
        wait_until(lambda: self.samples(), 40, "the worker's metrics endpoint", details=self.procs.logs,
                   ignore=(OSError,), interval=0.2)


class Deployment:
    """One test's redis-server database, keyspace file and worker nodes."""

    def __init__(self, tmp: Path, server: RedisServer, config: Path) -> None:
        self.tmp, self.server, self.config = tmp, server, config
        self.client = redis.Redis.from_url(server.url(0))
        self.client.flushall()
        self.settings = Settings.load(redis_url=server.url(0), config=config)
        self.cache = Cache(settings=self.settings)
        self.procs = Processes(tmp, cluster_env(tmp, redis_url=server.url(0), broker_url=server.url(1),
                                                config=config, CACHEWARM_SCAN_INTERVAL="1000"))

    def node(self, name: str, **env: str) -> Node:
        port = free_port()
        node = Node(self.procs, name, port, {**self.procs.env, "CACHEWARM_METRICS_PORT": str(port), **env})
        node.ready()
        return node

    def read(self, keys: list[str], times: int = 3) -> None:
        """Reads each key `times` times (hot: decayed reads above the threshold) and waits for the hot set."""
        for _ in range(times):
            for key in keys:
                self.cache.get(key)
        wait_until(lambda: set(keys) <= set(hot_members(self.client, LAYOUT, "product")), 20,
                   "the keys in the hot set")

    def hour(self) -> ledger.Tally:
        now = int(time.time() * 1000)
        return ledger.last_hour(self.client, LAYOUT, ["product"], now)["product"]

    def close(self) -> None:
        self.procs.stop()
        self.cache.close()
        self.client.close()


@pytest.fixture
def deploy(tmp_path: Path, redis_server: RedisServer, api: SourceServer) -> Iterator[Callable[[str], Deployment]]:
    made: list[Deployment] = []

    def make(extra: str) -> Deployment:
        config = tmp_path / "cachewarm.toml"
        config.write_text(product_keyspace(api.url, ttl=600, refresh_ahead=0,
                                           extra='version_field = "version"\n' + extra))
        made.append(Deployment(tmp_path, redis_server, config))
        return made[-1]

    yield make
    for one in made:
        one.close()


def cached_version(dep: Deployment, key: str) -> int | None:
    value = dep.cache.get(key)
    return None if value is None else int(value["version"])


def test_a_writer_that_does_not_publish_is_found_labelled_missed_and_repaired(
        deploy: Callable[[str], Deployment], api: SourceServer) -> None:
    dep = deploy("audit_budget = 20\naudit_grace = 1")
    keys = [f"product:{i}" for i in range(40)]
    dep.read(keys)
    node = dep.node("worker")
    changed = random.Random(7).sample(range(40), 6)
    for i in changed:
        api.bump(i)  # the database changes; nobody publishes an invalidation

    wait_until(lambda: node.total("cachewarm_audit_repairs_total") >= 6, 90, "6 repairs",
               details=dep.procs.logs)
    time.sleep(2.0)  # a round more: nothing else is found
    assert node.total("cachewarm_audit_inconsistencies_total", cause="missed") == 6
    assert node.total("cachewarm_audit_inconsistencies_total") == 6
    assert node.total("cachewarm_audit_repairs_total") == 6
    assert node.total("cachewarm_audit_checks_total", result="inconsistent") == 6
    assert node.total("cachewarm_audit_staleness_seconds_count") == 6
    for i in range(40):  # the stale ones now hold the source's value; the others were never touched
        assert cached_version(dep, f"product:{i}") == (2 if i in changed else 1)
    hour = dep.hour()
    assert (hour.inconsistencies, hour.repairs) == (6, 6)
    assert hour.checks >= 40


def test_events_held_back_are_late_and_repaired_once(deploy: Callable[[str], Deployment],
                                                     api: SourceServer) -> None:
    dep = deploy("audit_budget = 20\naudit_grace = 1")
    keys = [f"product:{i}" for i in range(20)]
    dep.read(keys)
    # The group exists, as a consumer made it; this node consumes nothing: events wait in the stream.
    dep.client.xgroup_create(INVALIDATION_STREAM, CONSUMER_GROUP, id="$", mkstream=True)
    node = dep.node("held", CACHEWARM_INVALIDATION_CONSUMER="0")
    for i in (3, 8, 11, 17):
        item = api.bump(i)
        publish_invalidation(f"product:{i}", version=int(item["version"]), redis=dep.client)

    wait_until(lambda: node.total("cachewarm_audit_repairs_total") >= 4, 90, "4 repairs", details=dep.procs.logs)
    assert node.total("cachewarm_audit_inconsistencies_total", cause="late") == 4
    assert node.total("cachewarm_audit_inconsistencies_total") == 4
    for i in (3, 8, 11, 17):
        assert cached_version(dep, f"product:{i}") == 2

    # The held events are delivered now (a node that consumes); then the auditor goes round again.
    dep.procs.kill(node.proc)
    dep.node("consuming")
    wait_until(lambda: (g := dep.client.xinfo_groups(INVALIDATION_STREAM)[0])["lag"] == 0 and g["pending"] == 0,
               60, "the held events applied", details=lambda: f"{dep.client.xinfo_groups(INVALIDATION_STREAM)}"
               + dep.procs.log("consuming.log")[-3000:])
    checked = dep.hour().checks
    wait_until(lambda: dep.hour().checks >= checked + 40, 90, "two more rounds of audits", details=dep.procs.logs)
    hour = dep.hour()
    assert (hour.inconsistencies, hour.repairs) == (4, 4)
    for i in (3, 8, 11, 17):
        assert cached_version(dep, f"product:{i}") == 2


def test_a_correct_writer_at_a_steady_rate_gives_no_inconsistency(deploy: Callable[[str], Deployment],
                                                                   api: SourceServer) -> None:
    dep = deploy("audit_budget = 10")  # the grace window from the measured lag
    keys = [f"product:{i}" for i in range(50)]
    dep.read(keys)
    node = dep.node("worker")
    stop = threading.Event()

    def writer() -> None:
        rng = random.Random(3)
        while not stop.wait(0.05):  # 20 changes a second, each published after its commit
            i = rng.randrange(50)
            item = api.bump(i)
            publish_invalidation(f"product:{i}", version=int(item["version"]), redis=dep.client)

    def reader() -> None:
        with Cache(settings=dep.settings) as cache:
            while not stop.wait(0.01):
                cache.get(random.choice(keys))

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: dep.hour().checks >= 100, 120, "100 audits", details=dep.procs.logs)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    hour = dep.hour()
    assert hour.inconsistencies == 0
    assert node.total("cachewarm_audit_inconsistencies_total") == 0
    assert node.total("cachewarm_audit_checks_total", result="consistent") > 0


def test_the_source_sees_no_more_audit_requests_than_the_budget(deploy: Callable[[str], Deployment],
                                                                api: SourceServer) -> None:
    dep = deploy("audit_budget = 4\naudit_grace = 1")
    keys = [f"product:{i}" for i in range(100)]
    dep.read(keys)
    state = api.state
    assert isinstance(state, AuditCounting)
    dep.node("one")
    dep.node("two", CACHEWARM_INVALIDATION_CONSUMER="0")  # a second node: the budget is shared, not per node
    for i in range(0, 100, 10):
        api.bump(i)  # some re-checks too
    wait_until(lambda: len(state.audit_times) >= 41, 120, "41 audit requests", details=dep.procs.logs)
    times = list(state.audit_times)
    span = times[-1] - times[0]
    # A token bucket of 4 a second, burst 1: n requests take at least (n - 1) / 4 seconds, however many nodes ask.
    assert len(times) - 1 <= 4 * span + 1
    for start in times:  # and no one-second window holds more than the budget and its one token of burst
        assert sum(start <= t < start + 1.0 for t in times) <= 5
