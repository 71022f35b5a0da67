"""`cachewarm status`: table and JSON from a real redis-server; hit ratio since a time; URLs masked."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from cachewarm import Cache
from cachewarm.cli import cli
from cachewarm.demo.redis_server import RedisServer, free_port
from cachewarm.metrics import history
from cachewarm.redis_layer.keys import DEAD_LETTER_STREAM, KeyLayout
from tests.support.redis_cluster import topologies

CONFIG = """
[keyspaces.product]
pattern = "product:{id}"
source = "python:tests.metrics.test_metrics_status:product"
ttl = 60
"""


def product(id: str) -> dict[str, Any]:
    return {"id": id}


@pytest.fixture
def config(write_config: Callable[[str], Path]) -> Path:
    return write_config(CONFIG)


def run_status(url: str, config: Path, *args: str, topology: str = "standalone") -> Any:
    env = {"CACHEWARM_REDIS_URL": url, "CACHEWARM_CONFIG": str(config),
           "CACHEWARM_REDIS_CLUSTER": str(topology == "cluster").lower()}
    return CliRunner().invoke(cli, ["status", *args], env=env)


def read(cache: Cache, keys: list[str]) -> None:
    for key in keys:
        cache.get(key)
    assert cache.flush_stats()


@topologies
def test_status_json_shows_hot_keys_ratio_and_queues(config: Path, redis_url: str, redis_client: redis.Redis,
                                                     make_cache: Callable[..., Cache], topology: str) -> None:
    cache = make_cache(config)
    read(cache, ["product:1"] * 5 + ["product:2"] * 2 + ["product:3"])  # 3 misses, 5 hits
    redis_client.xadd(DEAD_LETTER_STREAM, {"reason": "bad"})
    redis_client.set(KeyLayout().worker("h.1"), "1", px=5000)

    result = run_status(redis_url, config, "--json", "--top", "2", topology=topology)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    product_status = data["keyspaces"]["product"]
    assert (product_status["hits"], product_status["misses"]) == (5, 3)
    assert data["hit_ratio_window"] is None  # no snapshot yet: over all the counters
    assert product_status["hit_ratio"] == pytest.approx(5 / 8)
    assert data["dead_letters"] == 1 and data["invalidation_pending"] == 0 and data["workers"] == 1
    top = product_status["top"]
    assert [k["key"] for k in top] == ["product:1", "product:2"]
    assert top[0]["reads"] == pytest.approx(5, rel=0.05)
    assert 55 < top[0]["ttl"] <= 60 and 0 <= top[0]["age"] < 5


def test_hit_ratio_since_counts_only_reads_after_the_snapshot(config: Path, redis_url: str,
                                                              redis_client: redis.Redis,
                                                              make_cache: Callable[..., Cache]) -> None:
    cache = make_cache(config)
    read(cache, ["product:a", "product:b", "product:c"])  # 3 misses
    layout = KeyLayout()
    seconds, micros = redis_client.time()
    now_ms = seconds * 1000 + micros // 1000
    stats = {k.decode(): float(v) for k, v in redis_client.hgetall(layout.stats).items()}
    assert history.record(redis_client, layout, stats, ["product"], now_ms - 120_000)
    read(cache, ["product:a", "product:b", "product:a"])  # 3 hits

    data = json.loads(run_status(redis_url, config, "--json", "--since", "60").output)
    assert data["hit_ratio_window"] == pytest.approx(120, abs=2)
    assert data["keyspaces"]["product"]["hit_ratio"] == 1.0
    assert data["keyspaces"]["product"]["hits"] == 3


def test_status_table(config: Path, redis_url: str, make_cache: Callable[..., Cache]) -> None:
    read(make_cache(config), ["product:1", "product:1"])
    result = run_status(redis_url, config)
    assert result.exit_code == 0, result.output
    assert "hit ratio" in result.output and "50.0%" in result.output
    assert "hottest keys of product" in result.output and "product:1" in result.output


def test_passwords_never_printed(config: Path) -> None:
    acl = ["--user", "default", "on", "nopass", "~*", "&*", "+@all",
           "--user", "app", "on", ">hunter2-secret", "~*", "&*", "+@all"]
    with RedisServer(extra_args=acl) as server:
        url = f"redis://app:hunter2-secret@127.0.0.1:{server.port}/0"
        for args in ((), ("--json",)):
            result = run_status(url, config, *args)
            assert result.exit_code == 0, result.output
            assert "hunter2-secret" not in result.output
            assert f"app:***@127.0.0.1:{server.port}" in result.output
    down = run_status(f"redis://app:hunter2-secret@127.0.0.1:{free_port()}/0", config)
    assert down.exit_code == 1
    assert "hunter2-secret" not in down.output
    assert down.output.startswith("cachewarm status: redis unavailable at redis://app:***@127.0.0.1:")
