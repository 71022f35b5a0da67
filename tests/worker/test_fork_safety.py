"""A worker forks its beat and its pool children: none of them may inherit a lock held by one of cachewarm's threads.

Issue: with the invalidation consumer running as a thread of the worker's main process, `worker -B` started with a
dead beat about one time in five (the beat child blocked forever on an import lock the consumer's thread held at
the fork). These tests start real workers many times and require every start to scan, and every pool child to run
a task.

How many starts: on the code before the fix (f5bae60^, measured on a loaded 2-core machine), 5 of 60 `worker -B`
starts and 2 of 12 `cachewarm run` starts never scanned (p ~ 0.08 and ~0.17 per start): the 30 + 12 starts here
all pass on that code with a probability of about 0.92^30 x 0.83^12 ~ 1%. The property behind them is checked
deterministically by the last test (no thread in the worker's main process). Each start is stopped with SIGKILL as
soon as its check is done (a warm shutdown doubled the CPU of a start), PARALLEL of them at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from cachewarm.demo.redis_server import RedisServer
from cachewarm.demo.source import SourceServer
from tests.support.keyspaces import write_config
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from cachewarm.cli import main; main()"]
CELERY = [sys.executable, "-m", "celery"]
PARALLEL = 3  # workers started at once (each on its own pair of Redis databases)
START_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


def _env(tmp: Path, server: RedisServer, source: SourceServer, slot: int) -> dict[str, str]:
    config = write_config(tmp, f"""
        [keyspaces.product]
        pattern = "product:{{id}}"
        source = "{source.url}/products/{{id}}"
        ttl = 30
        refresh_ahead = 5
        refresh_worth = 0  # every key above the hot threshold (the policy these reads were written for)
    """)
    return {**os.environ, "CACHEWARM_REDIS_URL": server.url(2 * slot), "CACHEWARM_BROKER_URL": server.url(2 * slot + 1),
            "CACHEWARM_CONFIG": str(config), "CACHEWARM_SCAN_INTERVAL": "0.25", "CACHEWARM_METRICS_PORT": "0",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the started process's group and to its children's own groups (`cachewarm run` starts its worker in
    a session of its own), at once: these tests check starts, and a warm shutdown costs each start a second of CPU
    (a clean stop is tests/worker/test_sidecar.py's and test_e2e_warming.py's)."""
    groups = [proc.pid]
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(int(child)) == int(child):
                    groups.append(int(child))
    for group in groups:  # SIGKILL takes effect before any of them runs again: none touches Redis after this
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    proc.wait(10)


def _start_and_wait_for_scans(cmd: list[str], tmp: Path, env: dict[str, str]) -> str | None:
    """Starts `cmd` (a worker with embedded beat) and waits until beat sent two scans and the worker ran one.
    None when it did; else the reason and the log's tail."""
    tmp.mkdir(parents=True, exist_ok=True)
    log_path = tmp / "worker.log"
    client = redis.Redis.from_url(env["CACHEWARM_BROKER_URL"])
    client.flushdb()
    redis.Redis.from_url(env["CACHEWARM_REDIS_URL"]).flushdb()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def scans() -> tuple[int, int] | None:
        text = log_path.read_text(errors="replace")
        sent = text.count("Sending due task cachewarm.scan")
        ran = len(re.findall(r"Task cachewarm\.scan\[[^\]]+\] succeeded", text))
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{text[-3000:]}"
        return None if sent < 2 or ran < 1 else (sent, ran)

    try:
        wait_until(scans, START_TIMEOUT, "two scans sent by beat and one run by the worker",
                   details=lambda: log_path.read_text(errors="replace")[-3000:], interval=0.1)
        return None
    except AssertionError as failure:  # one reason among the starts'
        return str(failure)
    finally:
        _stop(proc)
        client.close()


def _in_slots(starts: int, one: Callable[[int, int], str | None]) -> list[str]:
    """Runs one(i, slot) for i in range(starts), PARALLEL at once: slot k runs starts k, k + PARALLEL, ... one
    after the other, so no two running workers share a Redis database. The failures' reasons."""
    def slot_runs(slot: int) -> list[str]:
        reasons = (one(i, slot) for i in range(slot, starts, PARALLEL))
        return [r for r in reasons if r is not None]

    with ThreadPoolExecutor(PARALLEL) as pool:
        return [reason for reasons in pool.map(slot_runs, range(PARALLEL)) for reason in reasons]


def _run_starts(commands: list[list[str]], tmp_path: Path, server: RedisServer,
                source: SourceServer) -> list[str]:
    def one(i: int, slot: int) -> str | None:
        tmp = tmp_path / f"start-{i}"
        tmp.mkdir()
        env = _env(tmp, server, source, slot=slot)
        cmd = [c.replace("{schedule}", str(tmp / "beat-schedule")) for c in commands[i]]
        reason = _start_and_wait_for_scans(cmd, tmp, env)
        return None if reason is None else f"start {i} ({' '.join(commands[i][2:5])}): {reason}"

    return _in_slots(len(commands), one)


@pytest.mark.timeout(900)  # dozens of worker starts: the suite's 120 s per test is for one
def test_worker_with_embedded_beat_scans_on_every_start(tmp_path: Path, server: RedisServer,
                                                         source: SourceServer) -> None:
    worker = [*CELERY, "-A", "cachewarm.worker", "worker", "-B", "-s", "{schedule}", "--loglevel", "INFO",
              "--concurrency", "2", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    failures = _run_starts([worker] * 30, tmp_path, server, source)
    assert not failures, f"{len(failures)} of 30 starts never scanned:\n" + "\n\n".join(failures[:3])


@pytest.mark.timeout(900)  # dozens of worker starts: the suite's 120 s per test is for one
def test_cachewarm_run_scans_on_every_start(tmp_path: Path, server: RedisServer, source: SourceServer) -> None:
    run = [*CLI, "run", "--concurrency", "2", "--loglevel", "INFO", "--grace", "15"]
    failures = _run_starts([run] * 12, tmp_path, server, source)
    assert not failures, f"{len(failures)} of 12 starts never scanned:\n" + "\n\n".join(failures[:3])


@pytest.mark.timeout(900)  # dozens of worker starts: the suite's 120 s per test is for one
def test_every_prefork_child_runs_a_task_after_start(tmp_path: Path, server: RedisServer,
                                                     source: SourceServer) -> None:
    """Each start: -B and 3 pool children; a burst of probe tasks (each refreshes a key through the child's
    engine, then lingers) must be run by every child, which a child that inherited a held lock never does."""
    from tests.support.probe_app import PIDS_KEY

    children = 3

    def one(i: int, slot: int) -> str | None:
        tmp = tmp_path / f"start-{i}"
        tmp.mkdir()
        env = _env(tmp, server, source, slot=slot)
        cache = redis.Redis.from_url(env["CACHEWARM_REDIS_URL"])
        broker = redis.Redis.from_url(env["CACHEWARM_BROKER_URL"])
        cache.flushdb()
        broker.flushdb()
        log_path = tmp / "worker.log"
        cmd = [*CELERY, "-A", "tests.support.probe_app", "worker", "-B", "-s", str(tmp / "beat-schedule"),
               "--loglevel", "INFO", "--concurrency", str(children), "--without-gossip", "--without-mingle",
               "--without-heartbeat"]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            sender = _probe_sender(env)
            for n in range(children * 4):
                sender.send_task("cachewarm.test.probe", args=[f"product:{i}-{n}", 0.3])
            sender.close()
            try:
                wait_until(lambda: cache.scard(PIDS_KEY) >= children, START_TIMEOUT,
                           f"each of the {children} children to run a probe", interval=0.1)
            except AssertionError:
                return (f"start {i}: {cache.scard(PIDS_KEY)} of {children} children ran a probe:\n"
                        f"{log_path.read_text(errors='replace')[-3000:]}")
            return None
        finally:
            _stop(proc)
            cache.close()
            broker.close()

    failures = _in_slots(6, one)
    assert not failures, f"{len(failures)} of 6 starts had a child that never ran a task:\n" + "\n\n".join(failures[:2])


def test_the_worker_main_process_runs_no_thread(tmp_path: Path, server: RedisServer, source: SourceServer) -> None:
    """The property behind the two tests above, checked directly: after start, scans, refreshes, invalidations of hot
    keys and a metrics scrape, the worker's main process (the one that forks beat and every pool child, for as long
    as it lives) has exactly one thread, and never warned that it forked with one of cachewarm's running."""
    from cachewarm import Cache, Settings, publish_invalidation
    from cachewarm.demo.redis_server import free_port

    env = _env(tmp_path, server, source, slot=0)
    port = free_port()
    env.update(CACHEWARM_METRICS_PORT=str(port), CACHEWARM_HOT_THRESHOLD="0.5")
    for url in (env["CACHEWARM_REDIS_URL"], env["CACHEWARM_BROKER_URL"]):
        redis.Redis.from_url(url).flushdb()
    log_path = tmp_path / "worker.log"
    cmd = [*CELERY, "-A", "cachewarm.worker", "worker", "-B", "-s", str(tmp_path / "beat-schedule"), "--loglevel",
           "INFO", "--concurrency", "2", "--max-tasks-per-child", "3", "--without-gossip", "--without-mingle",
           "--without-heartbeat"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    cache = Cache(settings=Settings.load(redis_url=env["CACHEWARM_REDIS_URL"], config=env["CACHEWARM_CONFIG"],
                                         hot_threshold=0.5))
    client = redis.Redis.from_url(env["CACHEWARM_REDIS_URL"])
    try:
        def children_recycled() -> bool:
            for i in range(5):
                cache.get(f"product:{i}")
            publish_invalidation(f"product:{int(time.monotonic() * 10) % 5}", redis=client)
            text = log_path.read_text(errors="replace")
            ran = re.findall(r"/(ForkPoolWorker-\d+)\] Task cachewarm\.\w+\[[^\]]+\] succeeded", text)
            return len(ran) >= 20 and len(set(ran)) >= 4  # 2 children, each replaced after 3 tasks: forks go on

        wait_until(children_recycled, 2 * START_TIMEOUT, "20 tasks run by at least 4 pool children (recycled)",
                   details=lambda: log_path.read_text(errors="replace")[-3000:], interval=0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert b"cachewarm_invalidations_total" in response.read()
        threads = sorted(Path(f"/proc/{proc.pid}/task").iterdir())
        names = [(t / "comm").read_text().strip() for t in threads]
        assert len(threads) == 1, f"the worker's main process runs {len(threads)} threads: {names}"
        assert "forking with thread" not in log_path.read_text(errors="replace")
    finally:
        cache.close()
        client.close()
        _stop(proc)


def _probe_sender(env: dict[str, str]):  # type: ignore[no-untyped-def]
    from celery import Celery

    return Celery("probe-sender", broker=env["CACHEWARM_BROKER_URL"], set_as_current=False,
                  config_source={"task_serializer": "json", "accept_content": ["json"],
                                 "task_default_queue": "cachewarm.refresh"})  # a queue the worker consumes
