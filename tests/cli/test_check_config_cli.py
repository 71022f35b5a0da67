"""`cachewarm check-config` as an operator runs it: a real process, one line on stderr, exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHEWARM = str(Path(sys.executable).with_name("cachewarm"))  # the installed console script

GOOD = """
[keyspaces.product]
pattern = "product:{id}"
source = "http://127.0.0.1:8000/products/{id}"
ttl = 60
refresh_ahead = 15
tags = ["products"]
"""


def run_check(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CACHEWARM_")}
    environ.update({"CACHEWARM_CONFIG": str(config), "PYTHONPATH": str(ROOT), **env})
    return subprocess.run([CACHEWARM, "check-config"], env=environ, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def keyspace(**fields: str) -> str:
    lines = {"pattern": '"product:{id}"', "source": '"http://127.0.0.1:8000/products/{id}"', "ttl": "60"}
    lines.update(fields)
    return "[keyspaces.product]\n" + "".join(f"{k} = {v}\n" for k, v in lines.items())


def test_good_config_passes(write_config: Callable[[str], Path]) -> None:
    result = run_check(write_config(GOOD), CACHEWARM_REDIS_URL="redis://:hunter2@127.0.0.1:6399/0")
    assert result.returncode == 0, result.stderr
    assert "1 keyspace(s) (product)" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize(("text", "env", "named"), [
    pytest.param(keyspace(colour='"red"'), {}, "keyspaces.product.colour", id="unknown-field"),
    pytest.param(keyspace(ttl="-5"), {}, "keyspaces.product.ttl", id="negative-ttl"),
    pytest.param(keyspace(refresh_ahead="60"), {}, "refresh_ahead", id="refresh-ahead-ge-ttl"),
    pytest.param(keyspace(pattern='"product:{id"'), {}, "keyspaces.product.pattern", id="malformed-pattern"),
    pytest.param(keyspace(source='"http://127.0.0.1:8000/products/{sku}"'), {}, "{sku}",
                 id="unknown-placeholder-in-source"),
    pytest.param(keyspace(source='"python:no_such_pkg_xyz.mod:load"'), {}, "keyspaces.product.source",
                 id="unreachable-import-path"),
    pytest.param("[keyspaces.product\npattern = 1\n", {}, "CACHEWARM_CONFIG", id="bad-toml"),
    pytest.param(GOOD, {"CACHEWARM_METRICS_PORT": "not-a-port"}, "CACHEWARM_METRICS_PORT",
                 id="bad-metrics-port"),
    pytest.param(GOOD, {"CACHEWARM_METRICS_PORT": "70000"}, "CACHEWARM_METRICS_PORT", id="metrics-port-range"),
])
def test_bad_config_is_one_line_and_exit_2(write_config: Callable[[str], Path], text: str, env: dict[str, str],
                                           named: str) -> None:
    result = run_check(write_config(text), **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert lines[0].startswith("cachewarm: configuration error: ")
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_check(tmp_path / "absent.toml")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"cachewarm: configuration error: CACHEWARM_CONFIG: {tmp_path / 'absent.toml'} does not exist"]


def test_a_module_that_fails_at_import_is_one_line(write_config: Callable[[str], Path], tmp_path: Path) -> None:
    (tmp_path / "broken_source_mod.py").write_text("raise RuntimeError('no database configured')\n")
    (tmp_path / "syntax_source_mod.py").write_text("def load(id):\n    return {\n")
    for module, says in [("broken_source_mod", "RuntimeError: no database configured"),
                         ("syntax_source_mod", "SyntaxError")]:
        config = write_config(keyspace(source=f'"python:{module}:load"'))
        result = run_check(config, PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "keyspaces.product.source" in lines[0] and says in lines[0]


def test_a_config_path_that_cannot_be_read(tmp_path: Path) -> None:
    result = run_check(tmp_path)  # a directory
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CACHEWARM_CONFIG" in lines[0], result.stderr


@pytest.mark.parametrize(("fields", "says"), [
    ({"refresh_worth": "-0.01"}, "keyspaces.product.refresh_worth: refresh_worth = -0.01 must be a number of "
                                 "seconds >= 0 (e.g. 0.025"),
    ({"miss_cost": "0"}, "keyspaces.product.miss_cost: miss_cost = 0.0 must be > 0 (seconds a miss costs its "
                         "reader, e.g. 0.05; remove it to use the measured source latency)"),
    ({"refresh_budget": "-5"}, "keyspaces.product.refresh_budget: refresh_budget = -5.0 must be > 0"),
    ({"refresh_budget": "50", "rate": "10"}, "keyspaces.product: refresh_budget (50/s) is more than rate (10/s), "
                                             "which caps every refresh first: lower refresh_budget to at most rate, "
                                             "or raise rate"),
])
def test_refresh_economy_fields_point_at_the_fix(write_config: Callable[[str], Path], fields: dict[str, str],
                                                 says: str) -> None:
    result = run_check(write_config(keyspace(**fields)))
    assert result.returncode == 2, result
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_refresh_economy_fields_accepted(write_config: Callable[[str], Path]) -> None:
    result = run_check(write_config(keyspace(refresh_worth="0.05", miss_cost="0.2", refresh_budget="40")))
    assert result.returncode == 0, result.stderr
