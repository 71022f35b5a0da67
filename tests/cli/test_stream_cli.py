"""`cachewarm status` and `cachewarm invalidate` on the invalidation stream: undelivered (the group's lag), pending,
dead letters, consumers alive; `invalidate --dry-run`; the warning when no consumer reads; `status --watch`."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from cachewarm import Cache
from cachewarm.cli import cli
from cachewarm.invalidation.stream_state import ALIVE_MS, Consumer, beat
from cachewarm.redis_layer.keys import CONSUMER_GROUP, DEAD_LETTER_STREAM, INVALIDATION_STREAM, KeyLayout
from tests.support.redis_cluster import topologies
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
CACHEWARM = str(Path(sys.executable).with_name("cachewarm"))  # the installed console script
L = KeyLayout()
CONFIG = """
[keyspaces.product]
pattern = "product:{id}"
source = "python:tests.cli.test_inspect_cli:product"
ttl = 60
tags = ["products"]
"""


@pytest.fixture
def config(write_config: Callable[[str], Path]) -> Path:
    return write_config(CONFIG)


@pytest.fixture
def env(config: Path, redis_url: str, topology: str) -> dict[str, str]:
    return {"CACHEWARM_REDIS_URL": redis_url, "CACHEWARM_CONFIG": str(config),
            "CACHEWARM_REDIS_CLUSTER": str(topology == "cluster").lower()}


@pytest.fixture
def run(env: dict[str, str]) -> Callable[..., Result]:
    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=env)
    return invoke


@topologies
def test_status_shows_the_groups_lag_pending_dead_letters_and_consumers(run: Callable[..., Result],
                                                                        redis_client: redis.Redis) -> None:
    for i in range(3):
        redis_client.xadd(INVALIDATION_STREAM, {"key": f"product:{i}"})
    fresh = json.loads(run("status", "--json").output)["invalidations"]
    assert fresh["undelivered"] == 3 and fresh["group"] is False and fresh["consumers_alive"] == 0  # no worker yet

    redis_client.xgroup_create(INVALIDATION_STREAM, CONSUMER_GROUP, id="0")
    redis_client.xreadgroup(CONSUMER_GROUP, "host:1", {INVALIDATION_STREAM: ">"}, count=1)  # one read, not acked
    redis_client.xadd(INVALIDATION_STREAM, {"key": "product:9"})
    redis_client.xadd(DEAD_LETTER_STREAM, {"reason": "bad"})
    result = run("status", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    inv = data["invalidations"]
    # before: "invalidations pending: 1" alone, while 3 entries were not delivered to anyone
    assert (inv["undelivered"], inv["pending"], inv["dead_letters"]) == (3, 1, 1)
    assert data["invalidation_pending"] == 1 and data["invalidation_undelivered"] == 3
    assert inv["consumers_alive"] == 1 and inv["consumers"][0]["name"] == "host:1"
    line = run("status").output.splitlines()[2]
    assert line.startswith("invalidations undelivered: 3   pending: 1   dead letters: 1   consumers: 1 alive")


def test_status_counts_undelivered_entries_when_redis_does_not_know_the_lag(run: Callable[..., Result],
                                                                          redis_client: redis.Redis) -> None:
    ids = [redis_client.xadd(INVALIDATION_STREAM, {"key": f"product:{i}"}) for i in range(5)]
    redis_client.xgroup_create(INVALIDATION_STREAM, CONSUMER_GROUP, id="0")
    redis_client.xreadgroup(CONSUMER_GROUP, "host:1", {INVALIDATION_STREAM: ">"}, count=1)
    redis_client.xdel(INVALIDATION_STREAM, ids[3])  # a deletion after the last delivered id: lag unknown (nil)
    group = redis_client.xinfo_groups(INVALIDATION_STREAM)[0]
    assert group["lag"] is None
    inv = json.loads(run("status", "--json").output)["invalidations"]
    assert inv["undelivered"] == 3 and inv["undelivered_exact"] is True


def test_status_says_when_no_consumer_is_alive(run: Callable[..., Result], redis_client: redis.Redis) -> None:
    assert "consumers: none has read the stream yet (is a worker running?)" in run("status").output
    redis_client.xgroup_create(INVALIDATION_STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    redis_client.xgroup_createconsumer(INVALIDATION_STREAM, CONSUMER_GROUP, "gone:1")
    assert "consumers: 1 alive" in run("status").output  # just created: idle 0 (a stopped one: the rule below)


def test_a_consumer_of_a_quiet_stream_is_alive_by_its_heartbeat(env: dict[str, str],
                                                                redis_client: redis.Redis) -> None:
    # Before Redis 7.2 a read that finds nothing does not reset XINFO's idle time: the heartbeat tells.
    from cachewarm import Settings
    from cachewarm.invalidation.consumer import InvalidationConsumer

    settings = Settings.load(redis_url=env["CACHEWARM_REDIS_URL"], config=env["CACHEWARM_CONFIG"])
    with InvalidationConsumer(settings, block_ms=50) as consumer:
        consumer.poll()
        inv = json.loads(CliRunner().invoke(cli, ["status", "--json"], env=env).output)["invalidations"]
    assert inv["consumers_alive"] == 1 and inv["consumers"][0]["name"] == consumer.name


def test_the_alive_rule() -> None:
    assert Consumer("a", 0, ALIVE_MS / 1000 - 1).alive
    assert not Consumer("a", 0, ALIVE_MS / 1000 + 1).alive
    assert Consumer("a", 0, None, beating=True).alive


@topologies
def test_invalidate_dry_run_lists_a_tags_keys_and_publishes_nothing(run: Callable[..., Result],
                                                                   make_cache: Callable[..., Cache], config: Path,
                                                                   redis_client: redis.Redis) -> None:
    cache = make_cache(config)
    cache.get("product:1")
    cache.get("product:2")
    cache.delete("product:2")
    result = run("invalidate", "--dry-run", "--tag", "products", "product:7", "order:1")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "would invalidate key product:7 (not cached, keyspace product)",
        "would invalidate key order:1 (not cached, no keyspace)",
        "would invalidate tag products: 2 key(s), 1 cached",
        "  product:1 (cached, keyspace product)",
        "  product:2 (not cached, keyspace product)",
        "dry run: nothing published"]
    assert redis_client.xlen(INVALIDATION_STREAM) == 0
    assert redis_client.exists(L.value("product:1"))


def test_invalidate_warns_when_no_consumer_reads(env: dict[str, str], redis_client: redis.Redis) -> None:
    # before: `published ...` and nothing else, with no worker running
    result = CliRunner().invoke(cli, ["invalidate", "product:1"], env=env)
    assert result.exit_code == 0
    assert result.stdout.startswith("published ")
    assert result.stderr.startswith("cachewarm invalidate: warning: no worker's invalidation consumer is running "
                                    "(none has ever read it)")
    assert len(result.stderr.splitlines()) == 1

    beat(redis_client, L, "host:1")  # what a running consumer's loop does every 2 s
    quiet = CliRunner().invoke(cli, ["invalidate", "product:1"], env=env)
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_status_without_keyspaces_says_so_and_exits_2(tmp_path: Path, redis_url: str) -> None:
    # before: an empty table and exit 0
    for config in (tmp_path / "absent.toml", tmp_path / "empty.toml"):
        (tmp_path / "empty.toml").write_text("# nothing yet\n")
        result = CliRunner().invoke(cli, ["status"], env={"CACHEWARM_REDIS_URL": redis_url,
                                                          "CACHEWARM_CONFIG": str(config)})
        assert result.exit_code == 2, result.output
        assert result.output.startswith("cachewarm: configuration error: CACHEWARM_CONFIG: ")
        assert len(result.output.splitlines()) == 1


def as_in_a_terminal() -> None:
    """Ctrl-C as a terminal delivers it: SIGINT's default disposition in the child. An ignored SIGINT is inherited
    across exec, and a long-lived test process (a pytest-xdist worker that earlier ran code that ignores it) would
    hand that on: the command then never hears the Ctrl-C (seen: two full-suite runs, a 30 s timeout each)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_status_watch_redraws_every_second_until_ctrl_c(env: dict[str, str]) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CACHEWARM_")}
    environ.update(env, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([CACHEWARM, "status", "--watch", "--json"], env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=as_in_a_terminal)
    try:
        assert proc.stdout is not None
        frames = [json.loads(proc.stdout.readline()) for _ in range(3)]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()  # reaps it and closes the pipes
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    times = [frame["time_ms"] for frame in frames]
    assert all(0.7 < (b - a) / 1000 < 2.5 for a, b in itertools.pairwise(times)), times


def test_status_watch_shows_the_table_between_clears(env: dict[str, str]) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CACHEWARM_")}
    environ.update(env, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([CACHEWARM, "status", "--watch", "--interval", "0.3"],
                            env={**environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT, preexec_fn=as_in_a_terminal)
    assert proc.stdout is not None
    seen = bytearray()

    def read() -> None:
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):  # type: ignore[union-attr]
            seen.extend(chunk)

    reading = threading.Thread(target=read, daemon=True)
    reading.start()
    try:  # two frames, however long the imports take on a busy machine; then Ctrl-C
        wait_until(lambda: seen.count(b"cachewarm status of") >= 2 or proc.poll() is not None, timeout=60,
                   what="two frames of status --watch")
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reading.join(10)
        assert proc.stderr is not None
        out, err = bytes(seen), proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0, err
    assert out.count(b"cachewarm status of") >= 2
    assert b"Ctrl-C to stop" in out
