"""The endpoint outside Celery: single-process mode, the default bind address, and multiprocess mode switched on
after prometheus_client was already imported. Each runs in a fresh interpreter (prometheus_client's mode and
its created-series switch are process-wide)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from tests.unit.test_deploy import METRIC_NAMES

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
[keyspaces.product]
pattern = "product:{id}"
source = "python:tests.metrics.test_metrics_cluster:product"
ttl = 60
"""


def run_python(code: str, **env: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, check=False, env={"PATH": "/usr/bin:/bin", **env})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_single_process_endpoint_binds_loopback_and_exports_only_cachewarm_metrics(
        write_config: Callable[[str], Path], redis_url: str) -> None:
    config = write_config(CONFIG)
    out = run_python("""
        import json, urllib.request
        from prometheus_client.parser import text_string_to_metric_families
        from cachewarm import Settings
        from cachewarm.demo.redis_server import free_port
        from cachewarm.hooks import get_hooks
        from cachewarm.metrics import start_metrics_server
        server = start_metrics_server(Settings.load(metrics_port=free_port()))
        get_hooks().refresh("product", "ok")
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
            text = response.read().decode()
        names = sorted({f.name for f in text_string_to_metric_families(text)})
        print(json.dumps({"host": server.httpd.server_address[0], "names": names,
                          "refreshes": 'cachewarm_refreshes_total{keyspace="product",outcome="ok"} 1.0' in text}))
        server.close()
    """, CACHEWARM_REDIS_URL=redis_url, CACHEWARM_CONFIG=str(config), PYTHONPATH=str(ROOT))
    data = json.loads(out)
    assert data["host"] == "127.0.0.1"
    assert data["refreshes"]
    assert {name.removesuffix("_total") for name in METRIC_NAMES} == set(data["names"])


def test_multiprocess_mode_after_an_early_prometheus_import(tmp_path: Path) -> None:
    out = run_python("""
        import os
        import prometheus_client  # an application imported it first
        from cachewarm.metrics import multiprocess
        path = multiprocess.enable()
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector
        from cachewarm.metrics.process import ProcessMetrics, PrometheusHooks
        hooks = PrometheusHooks(ProcessMetrics(None))
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                hooks.refresh("product", "ok")
                multiprocess.mark_dead(os.getpid())
                os._exit(0)
            os.waitpid(pid, 0)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path)
        print(registry.get_sample_value("cachewarm_refreshes_total", {"keyspace": "product", "outcome": "ok"}))
        multiprocess.cleanup()
        print(os.path.exists(path))
    """, PYTHONPATH=str(ROOT))
    assert out.split() == ["3.0", "False"]
