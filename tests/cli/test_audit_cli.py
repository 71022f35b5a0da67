"""`cachewarm audit` and the audit lines of `cachewarm status`, against the session's redis-server (and Redis
Cluster) and the demo product API over a socket."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cachewarm import Cache
from cachewarm.audit import ledger
from cachewarm.cli import cli
from cachewarm.demo.source import SourceServer
from cachewarm.redis_layer.keys import KeyLayout
from tests.support.keyspaces import product_keyspace
from tests.support.redis_cluster import topologies

L = KeyLayout()


@pytest.fixture
def config(write_config: Callable[[str], Path], source: SourceServer) -> Path:
    return write_config(product_keyspace(source.url, ttl=300, refresh_ahead=0,
                                         extra='version_field = "version"\naudit_grace = 0.3'))


@pytest.fixture
def run(config: Path, redis_url: str, topology: str) -> Callable[..., Result]:
    env = {"CACHEWARM_REDIS_URL": redis_url, "CACHEWARM_CONFIG": str(config),
           "CACHEWARM_REDIS_CLUSTER": str(topology == "cluster").lower()}

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=env)
    return invoke


def read(cache: Cache, keys: list[str]) -> None:
    for _ in range(3):
        for key in keys:
            cache.get(key)
    assert cache.flush_stats()


@topologies
def test_audit_finds_what_was_changed_without_an_event_and_exits_1(
        run: Callable[..., Result], make_cache: Callable[..., Cache], config: Path, source: SourceServer) -> None:
    cache = make_cache(config)
    read(cache, [f"product:{i}" for i in range(30)])
    clean = run("audit", "--json")
    assert clean.exit_code == 0, clean.output
    data = json.loads(clean.output)
    assert data["inconsistencies"] == 0
    assert data["keyspaces"]["product"]["results"] == {"consistent": 30}

    for i in (4, 9):
        source.bump(i)
    found = run("audit", "--json", "--keys", "30")
    assert found.exit_code == 1, found.output
    data = json.loads(found.output)
    assert sorted((f["key"], f["cause"], f["repaired"]) for f in data["keyspaces"]["product"]["inconsistencies"]) \
        == [("product:4", "missed", False), ("product:9", "missed", False)]
    assert cache.get("product:4")["version"] == 1  # found, not repaired: it asked for no --repair

    text = run("audit", "--repair")
    assert text.exit_code == 1
    assert "inconsistent: product:4 (missed" in text.output and "repaired" in text.output
    assert cache.get("product:4")["version"] == 2
    after = run("audit")
    assert after.exit_code == 0, after.output
    assert "no inconsistency found" in after.output


def test_audit_of_an_unknown_keyspace_is_one_line_and_exit_2(run: Callable[..., Result]) -> None:
    result = run("audit", "--keyspace", "nope")
    assert result.exit_code == 2
    assert "--keyspace: no keyspace 'nope' (known: product)" in result.output


def test_status_shows_the_last_hours_audits_as_nines(run: Callable[..., Result], redis_client: object) -> None:
    now = int(time.time() * 1000)
    ledger.record(redis_client, L, "product", now, checks=1000, bad=1, repairs=1)  # type: ignore[arg-type]
    ledger.record(redis_client, L, "product", now - 3_700_000, checks=50, bad=50)  # type: ignore[arg-type]
    result = run("status", "--json")
    assert result.exit_code == 0, result.output
    audit = json.loads(result.output)["audit"]["product"]
    assert (audit["checks"], audit["inconsistencies"], audit["repairs"]) == (1000, 1, 1)  # older than an hour: out
    assert audit["nines"] == pytest.approx(3.0)
    text = run("status")
    assert "consistency (audits of the last hour)" in text.output
    assert ["product", "1000", "1", "1", "3.0"] in [line.split() for line in text.output.splitlines()]
