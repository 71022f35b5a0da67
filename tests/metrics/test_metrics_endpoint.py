"""The metrics endpoint of a real prefork worker (`celery -A cachewarm.worker worker -c 4`) and of `cachewarm run`,
scraped by a real Prometheus; their Redis URL carries a password that must never be shown."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from cachewarm import Cache, Settings
from cachewarm.demo.redis_server import RedisServer, free_port
from tests.support.keyspaces import write_config
from tests.support.waiting import wait_until
from tests.unit.test_deploy import METRIC_NAMES

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cr3t-pw-9f2"
PIDS_KEY = "test:metrics:source-pids"
CONFIG = """
[keyspaces.product]
pattern = "product:{id}"
source = "python:tests.metrics.test_metrics_endpoint:slow_product"
ttl = 60
refresh_ahead = 15
"""

pytestmark = pytest.mark.slow


def slow_product(id: str) -> dict[str, Any]:
    """The source, run inside the worker's children: records which process fetched."""
    url = os.environ.get("CACHEWARM_REDIS_URL")
    if url:
        client = redis.Redis.from_url(url)
        client.sadd(PIDS_KEY, os.getpid())
        client.close()
        time.sleep(0.05)
    return {"id": id}


@dataclass
class Worker:
    url: str  # the cache's Redis URL, with its password
    metrics_url: str
    metrics_port: int
    config: Path
    process: subprocess.Popen[bytes]
    log: Path

    def scrape(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return str(response.read().decode())

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        out = {}
        for family in text_string_to_metric_families(self.scrape()):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out


def tail(log: Path) -> Callable[[], str]:
    """The end of a process's log, for a failure message."""
    return lambda: log.read_text(errors="replace")[-3000:] if log.exists() else ""


@contextlib.contextmanager
def running(command: list[str]) -> Iterator[Worker]:
    """Runs `command` against a fresh redis-server whose URL carries a password; yields once /metrics answers."""
    acl = ["--user", "default", "on", "nopass", "~*", "&*", "+@all",
           "--user", "app", "on", f">{PASSWORD}", "~*", "&*", "+@all"]
    tmp = Path(tempfile.mkdtemp(prefix="cachewarm-metrics-test-"))
    with RedisServer(extra_args=acl) as server:
        url = f"redis://app:{PASSWORD}@127.0.0.1:{server.port}/0"
        config = write_config(tmp, CONFIG)
        port = free_port()
        env = {**os.environ, "CACHEWARM_REDIS_URL": url, "CACHEWARM_BROKER_URL": url[:-1] + "1",
               "CACHEWARM_CONFIG": str(config), "CACHEWARM_METRICS_PORT": str(port),
               "CACHEWARM_METRICS_HOST": "127.0.0.1", "PYTHONPATH": str(ROOT)}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        log = tmp / "worker.log"
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        handle = Worker(url, f"http://127.0.0.1:{port}/metrics", port, config, process, log)
        try:
            def answers() -> str:
                if process.poll() is not None:
                    raise AssertionError(f"exited {process.returncode}: {log.read_text(errors='replace')[-3000:]}")
                return handle.scrape()

            wait_until(answers, 30, "the metrics endpoint", details=tail(log), interval=0.2, ignore=(OSError,))
            yield handle
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    """`celery -A cachewarm.worker worker -P prefork -c 4`, children recycled every 4 tasks: the counts of dead
    children must stay in the total."""
    with running([sys.executable, "-m", "celery", "-A", "cachewarm.worker", "worker", "-P", "prefork", "-c", "4",
                  "--max-tasks-per-child", "4", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                  "--without-heartbeat"]) as handle:
        yield handle


@pytest.fixture(scope="module")
def run_node() -> Iterator[Worker]:
    """`cachewarm run`: worker, beat, invalidation consumer and the endpoint in one command."""
    with running([sys.executable, "-c", "from cachewarm.cli import main; main()", "run", "-c", "2", "--grace", "10",
                  "--loglevel", "INFO"]) as handle:
        yield handle


def refreshes_total(worker: Worker) -> float:
    return sum(value for (name, _), value in worker.samples().items() if name == "cachewarm_refreshes_total")


def test_prefork_children_sum_to_the_refreshes_done(worker: Worker) -> None:
    from cachewarm.worker.celery_app import create_app

    settings = Settings.load(redis_url=worker.url, config=worker.config)
    app = create_app(settings)
    batches = [[f"product:{task}-{i}" for i in range(2)] for task in range(16)]
    expected = sum(len(batch) for batch in batches)
    before = refreshes_total(worker)
    try:
        for batch in batches:
            app.send_task("cachewarm.refresh", args=[batch], kwargs={"force": True})
    finally:
        app.close()

    wait_until(lambda: refreshes_total(worker) - before >= expected, 40, f"{expected} refreshes",
               details=tail(worker.log), interval=0.2, ignore=(OSError,))
    time.sleep(0.5)  # nothing is counted twice
    assert refreshes_total(worker) - before == expected
    samples = worker.samples()
    assert samples[("cachewarm_refreshes_total", (("keyspace", "product"), ("outcome", "ok")))] >= expected
    assert samples[("cachewarm_source_request_duration_seconds_count", (("keyspace", "product"),))] >= expected
    client = redis.Redis.from_url(worker.url)
    try:
        assert client.scard(PIDS_KEY) >= 4  # spread over the children, recycled ones included
    finally:
        client.close()


@pytest.mark.parametrize("node", ["worker", "run_node"])
def test_endpoint_output_passes_promtool_and_names_every_metric(node: str, request: pytest.FixtureRequest) -> None:
    worker: Worker = request.getfixturevalue(node)
    text = worker.scrape()
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = {family.name for family in text_string_to_metric_families(text)}
    # The parser strips _total from counters; compare on the exported series' base names.
    exported = {name.removesuffix("_total") for name in names}
    assert {name.removesuffix("_total") for name in METRIC_NAMES} == exported
    assert PASSWORD not in text
    assert PASSWORD not in worker.log.read_text(errors="replace")


def prometheus_query(base: str, query: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def scalar(base: str, query: str) -> float | None:
    result = prometheus_query(base, query)
    return float(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus(run_node: Worker, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    shutil.copy(ROOT / "deploy" / "rules.yml", tmp_path / "rules.yml")
    (tmp_path / "prometheus.yml").write_text(textwrap.dedent(f"""
        global:
          scrape_interval: 1s
          evaluation_interval: 1s
        rule_files: [rules.yml]
        scrape_configs:
          - job_name: cachewarm
            metrics_path: /metrics
            static_configs: [{{targets: ["127.0.0.1:{run_node.metrics_port}"]}}]
        """))
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def test_prometheus_scrapes_hits_and_the_hit_ratio(run_node: Worker, prometheus: str) -> None:
    settings = Settings.load(redis_url=run_node.url, config=run_node.config)
    reads = lambda: scalar(prometheus, 'max(cachewarm_cache_hits_total{keyspace="product"})')  # noqa: E731
    before = wait_until(lambda: (reads(),) if reads() is not None else None, 30, "a first scrape", interval=0.2,
                        ignore=(OSError,))[0]
    misses_before = scalar(prometheus, 'max(cachewarm_cache_misses_total{keyspace="product"})') or 0.0

    with Cache(settings=settings) as cache:
        for key in ("product:r1", "product:r2", "product:r1", "product:r1", "product:r2", "product:r1"):
            cache.get(key)  # 2 misses, then 4 hits
        assert cache.flush_stats()

    wait_until(lambda: reads() == before + 4, 30, "the hits in Prometheus", interval=0.2, ignore=(OSError,))
    assert scalar(prometheus, 'max(cachewarm_cache_misses_total{keyspace="product"})') == misses_before + 2
    up = scalar(prometheus, 'up{job="cachewarm"}')
    assert up == 1
    # The recording rule of deploy/rules.yml: over the window (counters from 0), 4 hits of 6 reads.
    assert before == 0 and misses_before == 0

    def hit_ratio() -> float | None:
        value = scalar(prometheus, 'cachewarm:hit_ratio:rate5m{keyspace="product"}')
        return value if value is not None and 0 < value <= 1 else None

    ratio = wait_until(hit_ratio, 15, "the hit ratio rule", interval=0.2, ignore=(OSError,))
    assert ratio == pytest.approx(4 / 6, rel=1e-6)

    ratio_total = scalar(prometheus, 'max by (keyspace) (cachewarm_cache_hits_total) / (max by (keyspace) '
                                     '(cachewarm_cache_hits_total) + max by (keyspace) (cachewarm_cache_misses_total))')
    assert ratio_total == pytest.approx((before + 4) / (before + 4 + misses_before + 2))
