"""`cachewarm status` lists the worker hosts from their heartbeats (heartbeat.py): grouped by Celery node, with
processes, batches in flight and the last beat's age (from PTTL, no clock), old pid-only values included."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from click.testing import CliRunner

from cachewarm.cli import cli
from cachewarm.redis_layer.keys import KeyLayout
from cachewarm.warming import heartbeat

L = KeyLayout()


@pytest.fixture
def config(write_config: Callable[[str], Path]) -> Path:
    return write_config("""
        [keyspaces.product]
        pattern = "product:{id}"
        source = "http://127.0.0.1:9/products/{id}"
        ttl = 60
    """)


def status(url: str, config: Path, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["status", *args],
                                env={"CACHEWARM_REDIS_URL": url, "CACHEWARM_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    return result.output


def beat(client: redis.Redis, ident: str, ttl_left_ms: int, **value: Any) -> None:
    client.set(L.worker(ident), json.dumps(value), px=ttl_left_ms)


def test_status_lists_each_host_with_processes_in_flight_and_last_heartbeat(
        config: Path, redis_url: str, redis_client: redis.Redis) -> None:
    beat(redis_client, "m1.10.node", 2800, node="w1@m1", pid=10, role="node", worker=9, children=[10, 11, 12, 13])
    beat(redis_client, "m1.11", 2500, node="w1@m1", pid=11, role="pool", in_flight=2)
    beat(redis_client, "m1.12", 2900, node="w1@m1", pid=12, role="pool", in_flight=1)
    beat(redis_client, "m2.20.node", 1000, node="w2@m2", pid=20, role="node", worker=19)
    redis_client.set(L.worker("m3.30"), "30", px=2000)  # an older worker: its pid only

    data = json.loads(status(redis_url, config, "--json"))
    hosts = {h["node"]: h for h in data["hosts"]}
    assert sorted(hosts) == ["m3", "w1@m1", "w2@m2"]
    w1 = hosts["w1@m1"]
    # The sidecar names the main process and its children; children that refresh beat for themselves.
    assert [(p["role"], p["pid"], p["in_flight"]) for p in w1["processes"]] == [
        ("main", 9, None), ("sidecar", 10, None), ("pool", 11, 2), ("pool", 12, 1), ("child", 13, None)]
    assert w1["in_flight"] == 3
    # Ages come from the keys' PTTL (set 0.1 s and 2 s into their 3 s life), growing while the command runs.
    assert 0.1 <= w1["last_heartbeat_age"] < 1.0
    assert 2.0 <= hosts["w2@m2"]["last_heartbeat_age"] < 3.0
    assert [(p["role"], p["pid"]) for p in hosts["w2@m2"]["processes"]] == [("main", 19), ("sidecar", 20)]
    assert hosts["m3"]["processes"][0]["pid"] == 30

    table = status(redis_url, config)
    assert "worker hosts" in table
    row = next(line for line in table.splitlines() if line.startswith("w1@m1"))
    assert "main:9 sidecar:10 pool:11 pool:12 child:13" in row and " 3 " in row


async def test_beats_name_the_node_and_the_batches_in_flight(
        redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(heartbeat.NODE_ENV, "w7@box")
    client = redis.asyncio.Redis.from_url(redis_url)
    in_flight = [4]
    task = asyncio.create_task(heartbeat.beat_forever(client, L, "box.1", 0.05, in_flight=lambda: in_flight[0]))
    try:
        await asyncio.sleep(0.1)
        in_flight[0] = 1
        await asyncio.sleep(0.1)
        value = json.loads(redis_client.get(L.worker("box.1")) or b"{}")
        assert (value["node"], value["role"], value["in_flight"]) == ("w7@box", "sidecar", 1)
        assert 0 < redis_client.pttl(L.worker("box.1")) <= heartbeat.TTL_MS
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
    assert not redis_client.exists(L.worker("box.1"))  # a stopped process takes its heartbeat away
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        node = heartbeat.NodeBeat(redis.Redis.from_url(redis_url), L, worker_pid=os.getpid())
        node.beat()
    finally:
        child.kill()
        child.wait()
    [found] = heartbeat.read_heartbeats(redis_client, L)
    assert (found.node, found.role, found.extra["worker"]) == ("w7@box", "node", os.getpid())
    assert child.pid in found.extra["children"]  # this process's children, from /proc
    node.close()
    assert heartbeat.read_heartbeats(redis_client, L) == []
