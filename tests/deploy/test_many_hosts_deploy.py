"""The many-hosts kit in deploy/: the systemd units run as written (two worker nodes from the template unit on
one machine, each on its own metrics port, both listed by `cachewarm status`, both stopping cleanly on the
unit's kill signal), `systemd-analyze verify` accepts them (where systemd is installed), docs/OPERATIONS.md shows
the same command lines, and the Grafana dashboard has its per-host panel."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis
from click.testing import CliRunner

from cachewarm.cli import cli
from cachewarm.demo.redis_server import RedisServer, free_port
from cachewarm.demo.source import SourceServer
from tests.support.keyspaces import product_keyspace, write_config
from tests.support.processes import ROOT, Processes, cluster_env
from tests.support.waiting import wait_until

UNITS = ROOT / "deploy" / "systemd"
WORKER_UNIT = UNITS / "cachewarm-worker@.service"
BEAT_UNIT = UNITS / "cachewarm-beat.service"
ENV_FILE = UNITS / "cachewarm.env"
INSTALLED_CELERY = "/opt/cachewarm/.venv/bin/celery"
SHARED = ("CACHEWARM_REDIS_URL", "CACHEWARM_BROKER_URL", "CACHEWARM_CONFIG", "CACHEWARM_KEY_PREFIX",
          "CACHEWARM_HOT_HALF_LIFE")


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def expand(value: str, instance: str) -> str:
    """The systemd specifiers these units use: %i (instance), %% (a literal %)."""
    return re.sub(r"%[i%]", lambda m: instance if m.group() == "%i" else "%", value)


def env_file() -> dict[str, str]:
    lines = [line for line in ENV_FILE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:  # Debian has it wherever systemd runs; containers may not
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    for path in (WORKER_UNIT, BEAT_UNIT):
        # systemd-analyze checks the command exists: point it at this venv's celery for the check.
        name = path.name.replace("@.", "@9808.") if "@" in path.name else path.name
        copy = tmp_path / path.name
        copy.write_text(path.read_text().replace(INSTALLED_CELERY, str(Path(sys.executable).parent / "celery")))
        proc = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


def test_units_and_the_env_file_hold_what_every_host_shares() -> None:
    for path in (WORKER_UNIT, BEAT_UNIT):
        service = unit(path)["Service"]
        assert service["EnvironmentFile"] == "/etc/cachewarm/cachewarm.env"
        assert service["ExecStart"].startswith(INSTALLED_CELERY + " -A cachewarm.worker ")
    worker = unit(WORKER_UNIT)["Service"]
    assert worker["KillMode"] == "mixed" and worker["KillSignal"] == "SIGTERM"
    assert worker["Environment"] == "CACHEWARM_METRICS_PORT=%i"
    assert "-n cachewarm-%i@%%h" in worker["ExecStart"]  # unique node names across and within hosts
    assert set(SHARED) <= set(env_file())
    operations = (ROOT / "docs" / "OPERATIONS.md").read_text()
    for path in (WORKER_UNIT, BEAT_UNIT):  # the doc shows the units as they are
        assert unit(path)["Service"]["ExecStart"] in operations, f"docs/OPERATIONS.md misses {path.name}"
    for name in SHARED:
        assert name in operations


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_nodes_of_the_template_unit_run_side_by_side(tmp_path: Path) -> None:
    """What `systemctl start cachewarm-worker@P1 cachewarm-worker@P2` runs, then `systemctl stop` of both."""
    ports = [str(free_port()), str(free_port())]
    service = unit(WORKER_UNIT)["Service"]
    with SourceServer(latency=0.0) as source, RedisServer() as server:
        config = write_config(tmp_path, product_keyspace(source.url, ttl=60, refresh_ahead=10))
        shared = cluster_env(tmp_path, redis_url=server.url(0), broker_url=server.url(1), config=config)
        base = {**env_file(), **{k: v for k, v in shared.items() if k.startswith("CACHEWARM_")}}
        base["CACHEWARM_METRICS_HOST"] = "127.0.0.1"
        procs = Processes(tmp_path, {**os.environ, **base, "PYTHONPATH": str(ROOT)})
        try:
            nodes = []
            for port in ports:
                key, _, value = expand(service["Environment"], port).partition("=")
                argv = shlex.split(expand(service["ExecStart"], port))
                argv[:1] = [sys.executable, "-m", "celery"]
                nodes.append(procs.spawn(*argv, log=f"{port}.log", env={**procs.env, key: value}))
            for port in ports:
                wait_until(lambda p=port: "ready." in procs.log(f"{p}.log"), 40, f"node {port} ready",
                           details=procs.logs)
                wait_until(lambda p=port: httpx.get(f"http://127.0.0.1:{p}/metrics", timeout=2).status_code == 200,
                           40, f"metrics on {port}", ignore=(httpx.HTTPError,), details=procs.logs, interval=0.2)

            def listed() -> list[str]:
                result = CliRunner().invoke(cli, ["status", "--json"], env={
                    "CACHEWARM_REDIS_URL": server.url(0), "CACHEWARM_CONFIG": str(config)})
                return sorted(h["node"].split("@")[0] for h in json.loads(result.output)["hosts"])

            wait_until(lambda: listed() == sorted(f"cachewarm-{p}" for p in ports), 30,
                       "both nodes in cachewarm status", details=procs.logs)
            for node in nodes:  # KillMode=mixed: the unit's KillSignal to the main process only
                node.send_signal(getattr(signal, service["KillSignal"]))
            for node in nodes:
                assert node.wait(float(service["TimeoutStopSec"])) == 0, procs.logs()
            client = redis.Redis.from_url(server.url(0))
            wait_until(lambda: not client.keys("cachewarm:workers:*"), 10, "the nodes' heartbeats gone")
            client.close()
        finally:
            procs.stop()


def test_dashboard_has_a_per_host_panel() -> None:
    data = json.loads((ROOT / "deploy" / "grafana" / "dashboard.json").read_text())
    panel = next(p for p in data["panels"] if p["title"] == "Per worker host")
    exprs = [t["expr"] for t in panel["targets"]]
    assert any("cachewarm_refreshes_total" in e and "by (instance)" in e for e in exprs), exprs
    assert any('up{job="cachewarm"}' in e for e in exprs), exprs
    assert all("{{instance}}" in t.get("legendFormat", "") for t in panel["targets"])
