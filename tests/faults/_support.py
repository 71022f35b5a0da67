"""Helpers of the fault suite (importable by tests and, as python: sources, by worker processes)."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from cachewarm.demo.source import SourceServer, SourceState


class InFlightTransport(httpx.BaseTransport):
    """Counts source requests in flight per URL path, to check the single flight (one per key per process)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self._lock = threading.Lock()
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        with self._lock:
            self.requests += 1
            self.in_flight[path] += 1
            self.max_in_flight[path] = max(self.max_in_flight[path], self.in_flight[path])
        try:
            response = self._inner.handle_request(request)
            response.read()
            return response
        finally:
            with self._lock:
                self.in_flight[path] -= 1

    def close(self) -> None:
        self._inner.close()


def percentile(samples: list[float], q: float) -> float:
    """The q-quantile (0..1) of samples, nearest-rank."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


ITEM_CALLS: list[str] = []


def item_source(id: str) -> dict[str, Any] | None:
    """A python: source: {"id": id}, or no such item for ids starting with "none"."""
    ITEM_CALLS.append(id)
    return None if id.startswith("none") else {"id": id}


class Processes:
    """Celery worker, beat and `cachewarm run` processes of one test, each in its own session, killed by pid."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, *args: str, log: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = open(self.tmp / log, "ab")  # noqa: SIM115 - the child holds it
        proc = subprocess.Popen(list(args), env=env or self.env, cwd=self.tmp, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.procs.append(proc)
        return proc

    def worker(self, *, log: str = "worker.log", concurrency: int = 1) -> subprocess.Popen[bytes]:
        return self.spawn(sys.executable, "-m", "celery", "-A", "cachewarm.worker", "worker", "--loglevel", "INFO",
                          "--pool", "prefork", "--concurrency", str(concurrency), "--without-gossip",
                          "--without-mingle", "--without-heartbeat", log=log)

    def beat(self, *, log: str = "beat.log") -> subprocess.Popen[bytes]:
        schedule = self.tmp / f"{log}.schedule"
        return self.spawn(sys.executable, "-m", "celery", "-A", "cachewarm.worker", "beat", "--loglevel", "INFO",
                          "-s", str(schedule), log=log)

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Signals the process's own group (the prefork children are in it) and waits for the parent."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc, signal.SIGTERM)
        # children left behind by a SIGKILLed parent
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def log(self, name: str) -> str:
        path = self.tmp / name
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}" for p in self.tmp.glob("*.log"))


def cluster_env(tmp: Path, *, redis_url: str, broker_url: str, config: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEWARM_")}
    env.update(CACHEWARM_REDIS_URL=redis_url, CACHEWARM_BROKER_URL=broker_url, CACHEWARM_CONFIG=str(config),
               CACHEWARM_METRICS_PORT="0", PYTHONPATH=str(Path(__file__).resolve().parents[2]), **extra)
    return env


def wait_until(predicate: Callable[[], bool], timeout: float, message: Callable[[], str] | str = "",
               interval: float = 0.1) -> float:
    """Seconds it took for predicate to hold; AssertionError (with message) after timeout."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(message() if callable(message) else message)
        time.sleep(interval)
    return time.monotonic() - started


class RecordingState(SourceState):
    """The demo source's state, also noting when each item was read (to find duplicate refreshes)."""

    def __init__(self, **kwargs: Any) -> None:
        self.times: defaultdict[str, list[float]] = defaultdict(list)
        self.origins: defaultdict[str, list[float]] = defaultdict(list)  # X-From header (readers set it)
        super().__init__(**kwargs)

    async def read(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        self.times[request.match_info["id"]].append(now)
        self.origins[request.headers.get("x-from", "worker")].append(now)
        return await super().read(request)


def recording_source(latency: float = 0.01) -> tuple[SourceServer, RecordingState]:
    server = SourceServer(latency=latency)
    state = server.state = RecordingState(latency=latency)
    return server.start(), state


def requests_between(state: RecordingState, start: float, end: float) -> dict[str, list[float]]:
    return {item: [t for t in list(times) if start <= t < end] for item, times in list(state.times.items())}


def close_pairs(times: dict[str, list[float]], gap: float) -> int:
    """How many times a key was fetched again less than `gap` seconds after the previous fetch."""
    return sum(1 for ts in times.values() for a, b in itertools.pairwise(ts) if b - a < gap)
