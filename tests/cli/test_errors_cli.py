"""Errors that point at the fix (issue 26 item 3): unknown CACHEWARM_ variables, check-config --ping, a worker or
`cachewarm run` that cannot reach the cache or the broker at start, one form for a Redis failure, empty and
overlapping keyspace files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from cachewarm.cli import cli
from cachewarm.config.keyspaces import overlap
from cachewarm.demo.redis_server import RedisServer, free_port
from cachewarm.demo.source import SourceServer
from cachewarm.settings import unknown_variables

ROOT = Path(__file__).resolve().parents[2]
CACHEWARM = str(Path(sys.executable).with_name("cachewarm"))
CONFIG = """
[keyspaces.product]
pattern = "product:{id}"
source = "python:tests.cli.test_inspect_cli:product"
ttl = 60
"""


def run(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CACHEWARM_")}
    environ.update({"PYTHONPATH": str(ROOT), **env})
    return subprocess.run(list(args), env=environ, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_an_unknown_variable_is_one_warning_naming_the_closest_setting(write_config: Callable[[str], Path],
                                                                      redis_url: str) -> None:
    # before: ignored in silence, the process quietly on localhost:6379
    env = {"CACHEWARM_CONFIG": str(write_config(CONFIG)), "CACHEWARM_REDIS_URL": redis_url,
           "CACHEWARM_REDIS_ULR": "redis://elsewhere:6379/0"}
    for args in (["check-config"], ["status"], ["pins"]):
        done = run(CACHEWARM, *args, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stderr.splitlines() == ["cachewarm: warning: CACHEWARM_REDIS_ULR is not a cachewarm setting "
                                            "(did you mean CACHEWARM_REDIS_URL?); ignored"], args
    code = "from cachewarm import Cache; Cache.from_settings().close(); Cache.from_settings().close()"
    library = run(sys.executable, "-c", code, env=env)  # once per process, from any Settings.load()
    assert library.stderr.count("CACHEWARM_REDIS_ULR") == 1, library.stderr


def test_which_variables_are_named() -> None:
    assert unknown_variables({"CACHEWARM_REDIS_URL": "x", "CACHEWARM_NODE_NAME": "n", "PATH": "/bin",
                              "cachewarm_hot_treshold": "2", "CACHEWARM_ZZZ": "1"}) == [
        "cachewarm: warning: CACHEWARM_ZZZ is not a cachewarm setting (the settings: README.md, Configuration); "
        "ignored",
        "cachewarm: warning: cachewarm_hot_treshold is not a cachewarm setting (did you mean "
        "CACHEWARM_HOT_THRESHOLD?); ignored"]


def test_check_config_ping_says_what_answered(write_config: Callable[[str], Path], redis_url: str) -> None:
    with SourceServer(latency=0) as source:
        config = write_config(CONFIG + f"""
[keyspaces.price]
pattern = "price:{{id}}"
source = "{source.url}/products/{{id}}"
ttl = 60
""")
        good = run(CACHEWARM, "check-config", "--ping", env={"CACHEWARM_CONFIG": str(config),
                                                             "CACHEWARM_REDIS_URL": redis_url})
        assert good.returncode == 0, good.stdout + good.stderr
        lines = good.stdout.splitlines()
        assert lines[1:] == [f"cache {redis_url}: answered", f"broker {redis_url[:-1]}1: answered",
                             "source product python:tests.cli.test_inspect_cli:product (imported): answered",
                             f"source price {source.url}: answered"]
    dead = free_port()
    # before: `ok` for all of them (check-config never connected)
    bad = run(CACHEWARM, "check-config", "--ping", env={
        "CACHEWARM_CONFIG": str(config), "CACHEWARM_REDIS_URL": f"redis://:hunter2@127.0.0.1:{dead}/0",
        "CACHEWARM_BROKER_URL": f"amqp://guest:hunter2@127.0.0.1:{dead}//"})
    assert bad.returncode == 1
    assert "hunter2" not in bad.stdout + bad.stderr
    lines = bad.stdout.splitlines()
    assert lines[1].startswith(f"cache redis://:***@127.0.0.1:{dead}/0: did not answer (ConnectionError: ")
    assert lines[2].startswith(f"broker amqp://guest:***@127.0.0.1:{dead}//: did not answer (")
    assert lines[4].startswith(f"source price {source.url}: did not answer (ConnectionRefusedError")
    offline = run(CACHEWARM, "check-config", env={"CACHEWARM_CONFIG": str(config),
                                                  "CACHEWARM_REDIS_URL": f"redis://127.0.0.1:{dead}/0"})
    assert offline.returncode == 0 and len(offline.stdout.splitlines()) == 1  # without --ping: offline


@pytest.mark.parametrize("unreachable", ["cache", "broker"])
def test_run_and_the_worker_stop_in_one_line_when_a_server_is_unreachable(write_config: Callable[[str], Path],
                                                                          redis_server: RedisServer,
                                                                          unreachable: str) -> None:
    dead = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    env = {"CACHEWARM_CONFIG": str(write_config(CONFIG)), "CACHEWARM_REDIS_URL": redis_server.url(0),
           "CACHEWARM_BROKER_URL": redis_server.url(1)}
    env["CACHEWARM_REDIS_URL" if unreachable == "cache" else "CACHEWARM_BROKER_URL"] = dead
    what = "redis" if unreachable == "cache" else "broker"
    for name, args in [("run", [CACHEWARM, "run", "-c", "1"]),
                       ("worker", [sys.executable, "-m", "celery", "-A", "cachewarm.worker", "worker", "-c", "1",
                                   "--without-gossip", "--without-mingle", "-l", "WARNING"])]:
        started = time.monotonic()
        # before: `Trying again in 2.00 seconds... (N/100)` lines for minutes, never the URL
        done = run(*args, env=env, timeout=60)
        assert done.returncode == 1, (name, done.stderr[-2000:])
        assert time.monotonic() - started < 30
        out = done.stdout + done.stderr
        assert "hunter2" not in out and "Trying again" not in out, out[-2000:]
        ours = [line for line in out.splitlines() if line.startswith("cachewarm ")]
        assert len(ours) == 1, out[-2000:]
        assert ours[0].startswith(f"cachewarm {name}: {what} unavailable at {dead.replace('hunter2', '***')} (")


def test_every_command_reports_a_redis_failure_in_one_form(write_config: Callable[[str], Path]) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    env = {"CACHEWARM_CONFIG": str(write_config(CONFIG)), "CACHEWARM_REDIS_URL": url}
    masked = url.replace("hunter2", "***")
    # before: `cachewarm warm: redis failed: ConnectionError` (no URL), `cachewarm: could not publish ... (redis
    # URL)`, `cachewarm: cannot read status from Redis at URL: ...`
    for args in (["warm", "product:1"], ["invalidate", "product:1"], ["status"], ["inspect", "product:1"],
                 ["pins"], ["unpin", "--all"], ["invalidate", "--dry-run", "--tag", "t"],
                 ["trace", "--seconds", "1", "--out", str(write_config(CONFIG).with_name("never.trace"))]):
        result = CliRunner().invoke(cli, args, env=env)
        assert result.exit_code == 1, (args, result.output)
        assert result.output.splitlines() == [
            f"cachewarm {args[0]}: redis unavailable at {masked} (ConnectionError: Error 111 connecting to "
            f"127.0.0.1:{url.rsplit(':', 1)[1][:-2]}. Connection refused.)"], args
    assert not write_config(CONFIG).with_name("never.trace").exists()  # a trace that could not start: no file


def test_an_empty_keyspace_file_is_a_configuration_error(tmp_path: Path) -> None:
    empty = tmp_path / "cachewarm.toml"
    empty.write_text("")
    # before: `ok: 0 keyspace(s)`, exit 0
    done = run(CACHEWARM, "check-config", env={"CACHEWARM_CONFIG": str(empty)})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"cachewarm: configuration error: CACHEWARM_CONFIG: {empty} defines no "
                                        "keyspace (add a [keyspaces.NAME] table)"]


def test_overlapping_patterns_are_a_configuration_error_naming_both(write_config: Callable[[str], Path]) -> None:
    config = write_config(CONFIG + """
[keyspaces.sku]
pattern = "product:sku-{n}"
source = "python:tests.cli.test_inspect_cli:product"
ttl = 60
""")
    # before: `ok: 2 keyspace(s)`; product:sku-1 silently belonged to the first
    done = run(CACHEWARM, "check-config", env={"CACHEWARM_CONFIG": str(config)})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "cachewarm: configuration error: keyspaces.product.pattern 'product:{id}' and keyspaces.sku.pattern "
        "'product:sku-{n}' overlap: both match 'product:sku-x'; make them differ by a literal part (a placeholder "
        "matches one segment, no ':')"]


@pytest.mark.parametrize(("first", "second", "both"), [
    ("product:{id}", "product:{sku}", "product:x"),
    ("product:{id}", "product:{id}:{part}", None),
    ("product:{id}", "price:{id}", None),
    ("user:{id}", "{kind}:{id}", "user:x"),
    ("p{a}", "{b}q", "pq"),
    ("a:{x}:b", "a:{y}:c", None),
    ("{a}:{b}", "{c}", None),
    ("item:{id}.json", "item:{id}", "item:x.json"),
])
def test_overlap(first: str, second: str, both: str | None) -> None:
    assert overlap(first, second) == both
    assert (overlap(second, first) is None) == (both is None)
