"""The outbox relay on a real PostgreSQL (private cluster) and SQLite, against a real redis-server: rows relayed in
order with the publish_invalidation fields, rolled-back rows never, malformed rows dead-lettered, several relays
without duplicates, Redis down and back, NOTIFY wake-up, the CLI and the sidecar."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from cachewarm import Settings
from cachewarm.cli import cli
from cachewarm.demo.redis_server import RedisServer, free_port
from cachewarm.errors import ConfigError
from cachewarm.outbox import outbox_row, write_outbox
from cachewarm.outbox.dialects import dialect_for
from cachewarm.outbox.metrics import PrometheusRelayObserver
from cachewarm.outbox.relay import Relay
from cachewarm.redis_layer.keys import DEAD_LETTER_STREAM, INVALIDATION_STREAM
from cachewarm.worker.sidecar import Sidecar
from tests.support.outbox_db import BACKENDS, connect, new_database, outbox_count
from tests.support.processes import ROOT
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=BACKENDS)
def outbox_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return new_database(request.param, tmp_path)


@pytest.fixture
def settings(redis_url: str, outbox_url: str, tmp_path: Path) -> Settings:
    return Settings.load(redis_url=redis_url, outbox_url=outbox_url, outbox_poll_interval=0.02,
                         config=tmp_path / "none.toml")


@pytest.fixture
def relay(settings: Settings) -> Iterator[Relay]:
    made = Relay(settings)
    yield made
    made.close()


def write(url: str, *rows: tuple[str | None, str | None, int | None, int], commit: bool = True) -> None:
    with connect(url) as (conn, style):
        write_outbox(conn.cursor(), rows, paramstyle=style)
        if commit:
            conn.commit()
        else:
            conn.rollback()


def stream(client: redis.Redis, name: str = INVALIDATION_STREAM) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(name)]


def test_rows_are_relayed_in_order_with_the_publish_fields_then_deleted(
        relay: Relay, outbox_url: str, redis_client: redis.Redis) -> None:
    rows = [outbox_row(f"product:{i}", version=i, created_ms=1_700_000_000_000 + i) for i in range(30)]
    write(outbox_url, *rows[:10])
    write(outbox_url, outbox_row(tag="products", created_ms=1_700_000_000_500))
    write(outbox_url, *rows[10:])
    relay.batch_size = 7  # several batches
    assert relay.drain() == 31
    events = stream(redis_client)
    assert events[:10] == [{"key": f"product:{i}", "version": str(i), "ts": str(1_700_000_000_000 + i)}
                           for i in range(10)]
    assert events[10] == {"tag": "products", "ts": "1700000000500"}
    assert [e["key"] for e in events[11:]] == [f"product:{i}" for i in range(10, 30)]
    assert outbox_count(outbox_url) == 0
    assert relay.drain() == 0


def test_a_rolled_back_transaction_publishes_nothing(relay: Relay, outbox_url: str,
                                                     redis_client: redis.Redis) -> None:
    write(outbox_url, outbox_row("product:1", version=1), commit=False)
    write(outbox_url, outbox_row("product:2", version=1))
    relay.drain()
    assert [e["key"] for e in stream(redis_client)] == ["product:2"]


def test_malformed_rows_are_dead_lettered_deleted_and_counted(relay: Relay, outbox_url: str,
                                                              redis_client: redis.Redis) -> None:
    bad = [(None, None, None, 5), ("product:1", "products", None, 5), (None, "products", 3, 5), ("", None, None, 5),
           ("product:1", None, -1, 5)]
    with connect(outbox_url) as (conn, style):
        write_outbox(conn.cursor(), bad[:1], paramstyle=style)
        write_outbox(conn.cursor(), [outbox_row("product:ok", version=1)], paramstyle=style)
        write_outbox(conn.cursor(), bad[1:], paramstyle=style)
        conn.commit()
    registry = CollectorRegistry()
    relay.observer = PrometheusRelayObserver(registry)
    assert relay.drain() == 6
    assert [e["key"] for e in stream(redis_client)] == ["product:ok"]
    dead = stream(redis_client, DEAD_LETTER_STREAM)
    assert [d["reason"] for d in dead] == [
        "give exactly one of key and tag", "give exactly one of key and tag", "version applies to key events only",
        "a key must not be empty", "version must be an integer between 0 and 9007199254740991, not -1"]
    assert dead[1]["key"] == "product:1" and dead[1]["tag"] == "products" and "outbox_id" in dead[1]
    assert outbox_count(outbox_url) == 0
    assert relay.dead_lettered == 5
    assert registry.get_sample_value("cachewarm_outbox_dead_rows_total") == 5
    assert registry.get_sample_value("cachewarm_outbox_published_rows_total") == 1
    assert registry.get_sample_value("cachewarm_outbox_lag_seconds_count") == 1


def test_several_relays_publish_each_row_once(settings: Settings, outbox_url: str,
                                              redis_client: redis.Redis) -> None:
    relays = [Relay(settings, batch_size=5).start() for _ in range(3)]
    try:
        for txn in range(40):
            write(outbox_url, *(outbox_row(f"item:{txn}:{i}", version=txn) for i in range(5)))
        wait_until(lambda: redis_client.xlen(INVALIDATION_STREAM) >= 200, 20, "200 events")
        for made in relays:  # each relay finishes what it holds, so a duplicate would be in the stream now
            made.close()
        keys = [e["key"] for e in stream(redis_client)]
        assert len(keys) == len(set(keys)) == 200
        assert sum(made.published for made in relays) == 200
        assert outbox_count(outbox_url) == 0
    finally:
        for made in relays:
            made.close()


def test_a_relay_wakes_on_commit(settings: Settings, outbox_url: str, redis_client: redis.Redis) -> None:
    # On PostgreSQL only the NOTIFY can wake it within the waits below (its safety poll is every 5 s).
    with Relay(settings).start():
        write(outbox_url, outbox_row(tag="first"))
        wait_until(lambda: redis_client.xlen(INVALIDATION_STREAM) == 1, 3, "the first event")
        write(outbox_url, outbox_row(tag="second"))
        wait_until(lambda: redis_client.xlen(INVALIDATION_STREAM) == 2, 3, "the event after a commit")


def test_redis_down_keeps_the_rows_logs_once_and_publishes_when_back(
        outbox_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer().start()
    try:
        settings = Settings.load(redis_url=server.url(), outbox_url=outbox_url, outbox_poll_interval=0.02,
                                 redis_timeout=0.2)
        client = redis.Redis.from_url(server.url())
        server.stop()
        write(outbox_url, outbox_row("product:1", version=1), outbox_row("product:2", version=1))
        with caplog.at_level(logging.INFO, logger="cachewarm.outbox"), Relay(settings).start() as made:
            wait_until(lambda: made.published == 0 and any("unavailable" in r.message for r in caplog.records),
                       5, "the outage line")
            stop = threading.Event()
            stop.wait(1.0)  # several retries with backoff
            assert outbox_count(outbox_url) == 2
            server.start()
            wait_until(lambda: client.xlen(INVALIDATION_STREAM) == 2, 10, "both events after Redis came back")
        assert outbox_count(outbox_url) == 0
        outage_lines = [r for r in caplog.records if "unavailable" in r.message]
        assert len(outage_lines) == 1, [r.message for r in outage_lines]
        assert "rows stay in the outbox" in outage_lines[0].message
        assert any("reachable again" in r.message for r in caplog.records)
        client.close()
    finally:
        server.cleanup()


def test_the_sidecar_runs_the_relay_when_the_url_is_set(settings: Settings, outbox_url: str,
                                                        redis_client: redis.Redis) -> None:
    sidecar = Sidecar(settings, consume=False, serve_metrics=False).start()
    try:
        assert sidecar.relay is not None
        write(outbox_url, outbox_row("product:7", version=7))
        wait_until(lambda: redis_client.xlen(INVALIDATION_STREAM) == 1, 5, "the sidecar's relay")
    finally:
        sidecar.close()
    assert sidecar.relay is None


def test_a_sidecar_process_relays_and_exports_the_metrics(redis_url: str, tmp_path: Path,
                                                         redis_client: redis.Redis) -> None:
    """The worker's sidecar as the worker starts it (its own process, settings through the environment)."""
    url = new_database("sqlite", tmp_path)
    port = free_port()
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEWARM_")}
    env.update(CACHEWARM_REDIS_URL=redis_url, CACHEWARM_OUTBOX_URL=url, CACHEWARM_OUTBOX_POLL_INTERVAL="0.02",
               CACHEWARM_METRICS_PORT=str(port), CACHEWARM_INVALIDATION_CONSUMER="0",
               CACHEWARM_CONFIG=str(tmp_path / "none.toml"), PROMETHEUS_MULTIPROC_DIR=str(multiproc),
               PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "cachewarm.worker.sidecar"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        write(url, outbox_row("product:1", version=3), outbox_row(tag="products"))
        wait_until(lambda: redis_client.xlen(INVALIDATION_STREAM) == 2, 20, "the sidecar's relay")
        page = wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/metrics").text, 10, "/metrics",
                          ignore=(httpx.HTTPError,))
        assert "cachewarm_outbox_published_rows_total 2.0" in page
        assert "cachewarm_outbox_lag_seconds_count 2.0" in page
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]


def test_cachewarm_relay_runs_until_sigterm(redis_url: str, tmp_path: Path, redis_client: redis.Redis) -> None:
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEWARM_")}
    env.update(CACHEWARM_REDIS_URL=redis_url, CACHEWARM_OUTBOX_URL=url, CACHEWARM_OUTBOX_POLL_INTERVAL="0.02",
               PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", "from cachewarm.cli import main; main()", "relay",
                             "--create-table"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: outbox_count(url) == 0, 20, "the table", ignore=(Exception,))
        write(url, outbox_row("product:4", version=4))
        wait_until(lambda: redis_client.xlen(INVALIDATION_STREAM) == 1, 10, "the relayed row")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()[-2000:]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_cli_creates_the_table_and_relays_once(backend: str, redis_url: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("CACHEWARM_REDIS_URL", redis_url)
    runner = CliRunner()
    created = runner.invoke(cli, ["relay", "--url", url, "--create-table", "--once"])
    assert created.exit_code == 0, created.output
    write(url, outbox_row("product:1", version=2))
    monkeypatch.setenv("CACHEWARM_OUTBOX_URL", url)
    result = runner.invoke(cli, ["relay", "--once"])
    assert result.exit_code == 0, result.output
    assert "relayed 1 row(s)" in result.output
    assert stream(redis_client) == [{"key": "product:1", "version": "2", "ts": stream(redis_client)[0]["ts"]}]


def test_cli_without_a_url_is_one_line_and_status_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CACHEWARM_OUTBOX_URL", raising=False)
    result = CliRunner().invoke(cli, ["relay", "--once"])
    assert result.exit_code == 2
    assert "CACHEWARM_OUTBOX_URL" in result.output


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://x/y", "CACHEWARM_OUTBOX_URL"),
    ("sqlite:///:memory:", "in-memory"),
    ("sqlite://", "names no file"),
    ("postgresql://u:secret@h:5432", "names no database"),
])
def test_bad_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        dialect_for(url)
    assert "secret" not in str(raised.value)


def test_url_forms() -> None:
    pg = dialect_for("postgresql+psycopg://u:pw@127.0.0.1:5/db")
    assert pg.description == "postgresql+psycopg://u:***@127.0.0.1:5/db"
    assert dialect_for("sqlite:////abs/app.db").path == "/abs/app.db"  # type: ignore[attr-defined]
    assert dialect_for("sqlite:///rel/app.db").path == "rel/app.db"  # type: ignore[attr-defined]
