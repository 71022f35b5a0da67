"""`cachewarm inspect`, `pins`, `unpin` and `warm` of a 404 against the session's redis-server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from cachewarm import Cache
from cachewarm.cli import cli
from cachewarm.redis_layer.keys import KeyLayout
from tests.support.redis_cluster import topologies

L = KeyLayout()
CONFIG = """
[keyspaces.product]
pattern = "product:{id}"
source = "python:tests.cli.test_inspect_cli:product"
ttl = 60
refresh_ahead = 15
tags = ["products", "product-{id}"]

[keyspaces.user]
pattern = "user:{id}"
source = "python:tests.cli.test_inspect_cli:product"
ttl = 30
"""


def product(id: str) -> dict[str, Any] | None:
    return None if id.startswith("404") else {"id": id, "version": 3}


def broken(id: str) -> dict[str, Any]:
    raise ConnectionError("the products database refused the connection")


@pytest.fixture
def config(write_config: Callable[[str], Path]) -> Path:
    return write_config(CONFIG)


@pytest.fixture
def run(config: Path, redis_url: str, topology: str) -> Callable[..., Result]:
    env = {"CACHEWARM_REDIS_URL": redis_url, "CACHEWARM_CONFIG": str(config),
           "CACHEWARM_REDIS_CLUSTER": str(topology == "cluster").lower()}

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=env)
    return invoke


@topologies
def test_inspect_a_warmed_key(run: Callable[..., Result], make_cache: Callable[..., Cache], config: Path) -> None:
    assert run("warm", "product:1").exit_code == 0
    cache = make_cache(config)
    for _ in range(3):
        cache.get("product:1")
    assert cache.flush_stats()

    result = run("inspect", "product:1", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["keyspace"] == "product"
    value = info["value"]
    assert value["kind"] == "value" and value["version"] is None and value["bytes"] > 30
    assert 55 < value["ttl_left"] <= 60 and 0 <= value["age"] < 5
    assert 55 < value["redis_ttl"] <= 60
    assert info["fence"]["generation"]
    assert info["last_refresh"]["by"].startswith("warm.")  # recorded by the refresh's write (lua/write.lua)
    assert info["last_refresh"]["fetched_ms"] == value["fetched_ms"]
    assert info["lease"] is None
    assert info["tags"] == [{"tag": "products", "enlisted": True}, {"tag": "product-1", "enlisted": True}]
    assert info["pinned"] is True
    assert info["hot"]["hot"] is True and 2.5 < info["hot"]["decayed_reads"] <= 3

    human = run("inspect", "product:1")
    assert human.exit_code == 0
    lines = dict(line.split(None, 1) for line in human.output.splitlines())
    assert lines["pinned"].startswith("yes")
    assert lines["hot"].startswith("yes: 3.00 decayed reads") or lines["hot"].startswith("yes: 2.99")
    assert "by warm." in lines["refreshed"]
    assert "fresh for" in lines["expires"]


def test_inspect_a_key_loaded_by_a_reader_and_a_cold_one(run: Callable[..., Result],
                                                         make_cache: Callable[..., Cache], config: Path) -> None:
    cache = make_cache(config)
    assert cache.get("product:2") == {"id": "2", "version": 3}
    assert cache.get("product:404") is None
    info = json.loads(run("inspect", "product:2", "--json").output)
    assert info["last_refresh"] is None and info["pinned"] is False
    assert "refreshed  unknown" in run("inspect", "product:2").output

    negative = run("inspect", "product:404", "--json")
    assert negative.exit_code == 0 and json.loads(negative.output)["value"]["kind"] == "negative"

    cold = run("inspect", "user:7")
    assert cold.exit_code == 1  # not cached: the rest is shown all the same
    assert "not cached" in cold.output and "hot        no: 0.00" in cold.output


def test_inspect_a_key_of_no_keyspace_is_one_line_and_exit_2(run: Callable[..., Result]) -> None:
    result = run("inspect", "order:1")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["cachewarm inspect: no keyspace pattern matches 'order:1'"]


@topologies
def test_warm_never_pins_a_404_and_pins_lists_and_unpin_removes(run: Callable[..., Result],
                                                               redis_client: redis.Redis) -> None:
    warmed = run("warm", "product:1", "product:404", "user:1")
    assert warmed.exit_code == 0, warmed.output
    # before: "warmed and pinned 3 keys: 1 not_found, 2 ok", and pinned until a worker refreshed it
    assert warmed.output.strip() == "warmed 3 keys, pinned 2: 1 not_found (not pinned), 2 ok"
    assert redis_client.smembers(L.pinned("product")) == {b"product:1"}

    listed = run("pins", "--json")
    assert listed.exit_code == 0 and json.loads(listed.output) == {"product": ["product:1"], "user": ["user:1"]}
    assert run("pins").output.splitlines() == ["product: 1 pinned", "  product:1", "user: 1 pinned", "  user:1"]

    assert run("unpin", "product:1", "product:2").output.strip() == "unpinned 1 key(s); the others were not pinned"
    assert json.loads(run("pins", "--json").output) == {"product": [], "user": ["user:1"]}
    assert run("unpin", "--all").output.strip() == "unpinned 1 key(s)"
    assert json.loads(run("pins", "--json").output) == {"product": [], "user": []}
    assert run("unpin").exit_code == 2  # KEYs or --all
    assert run("unpin", "order:1").exit_code == 2


def test_a_warm_counts_no_late_refresh(run: Callable[..., Result], redis_client: redis.Redis) -> None:
    # before: every key warmed for the first time counted as cachewarm_refresh_late_total
    assert run("warm", *[f"product:{i}" for i in range(20)]).exit_code == 0
    stats = redis_client.hgetall(L.refresh_stats)
    assert stats[b"refreshed:product"] == b"20"
    assert b"late:product" not in stats


def test_warm_says_why_a_key_failed(write_config: Callable[[str], Path], redis_url: str) -> None:
    """With the source down, `warm` names the reason, not just "1 error" (before: `warmed 1 keys ...: 1 error`)."""
    config = write_config(CONFIG + '[keyspaces.broken]\npattern = "broken:{id}"\n'
                          'source = "python:tests.cli.test_inspect_cli:broken"\nttl = 30\n')
    env = {"CACHEWARM_REDIS_URL": redis_url, "CACHEWARM_CONFIG": str(config)}
    result = CliRunner().invoke(cli, ["warm", "broken:1", "product:1"], env=env)
    assert result.exit_code == 1, result.output
    assert "1 error" in result.output and "1 ok" in result.output
    assert "error: broken:1:" in result.output
    assert "the products database refused the connection" in result.output
