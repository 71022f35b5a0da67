"""Scenario 7: hostile broker input. Someone who can write to the broker queue pushes a pickle-serialized task
(whose unpickling would run a shell command) and a task with a name the worker does not know. Both must be
rejected, logged, removed from the queue, and the worker must go on working."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from cachewarm.demo.redis_server import RedisServer
from cachewarm.redis_layer.keys import KeyLayout
from tests.support.processes import Processes, cluster_env
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90)]


class Payload:
    """Unpickling this runs `touch MARKER`: what a worker that accepted pickle would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


def test_pickle_and_unknown_tasks_are_rejected_and_logged(server: RedisServer, tmp_path: Path,
                                                          write_config: Callable[[str], Path]) -> None:
    config = write_config("""
        [keyspaces.item]
        pattern = "item:{id}"
        source = "python:tests.faults._support:item_source"
        ttl = 30
    """)
    env = cluster_env(tmp_path, redis_url=server.url(0), broker_url=server.url(1), config=config,
                      CACHEWARM_SCAN_INTERVAL="1000")
    procs = Processes(tmp_path, env)
    marker = tmp_path / "pwned"
    broker = redis.Redis.from_url(server.url(1))
    cache_db = redis.Redis.from_url(server.url(0))
    sender = Celery("attacker", broker=server.url(1))
    sender.conf.task_default_queue = "cachewarm.scan"  # a queue the cachewarm worker consumes
    try:
        worker = procs.worker()
        wait_until(lambda: "ready" in procs.log("worker.log"), 30, "the worker to be ready", details=procs.logs)
        # By hand, as an attacker would: pickle for a real task name, and a name nobody registered.
        sender.send_task("cachewarm.scan", args=[Payload(marker)], serializer="pickle")
        sender.send_task("cachewarm.refresh", kwargs={"keys": Payload(marker)}, serializer="pickle")
        sender.send_task("cachewarm.no_such_task", args=["x"], serializer="json")
        wait_until(lambda: broker.llen("cachewarm.scan") == 0, 20, "the queue to drain", details=procs.logs)
        log = procs.log("worker.log")
        wait_until(lambda: "no_such_task" in procs.log("worker.log"), 10, "the unknown task in the log",
                   details=procs.logs)
        time.sleep(1.0)
        log = procs.log("worker.log")
        assert not marker.exists(), "a pickle payload was executed"
        assert log.count("untrusted content") >= 2 or log.count("ContentDisallowed") >= 2, log[-3000:]
        assert "unregistered task" in log.lower() and "cachewarm.no_such_task" in log, log[-3000:]
        assert broker.llen("cachewarm.scan") == 0
        assert not any(broker.hlen(k) for k in broker.scan_iter("unacked*") if broker.type(k) == b"hash")
        # The worker still works: a legitimate scan goes through.
        assert worker.poll() is None
        sender.send_task("cachewarm.scan", serializer="json")
        wait_until(lambda: cache_db.exists(KeyLayout().refresh_stats) == 1, 20, "a legitimate scan",
                   details=procs.logs)
        assert not marker.exists()
    finally:
        procs.stop()
        sender.close()
        broker.close()
        cache_db.close()
