"""Celery worker and beat subprocesses of one test: each in its own session with a log file, stopped by signalling
its process group (the prefork children and the sidecar are in it)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cluster_env(tmp: Path, *, redis_url: str, broker_url: str, config: Path, **extra: str) -> dict[str, str]:
    """This environment without any CACHEWARM_ variable, then the given ones (metrics on a free port)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEWARM_")}
    env.update(CACHEWARM_REDIS_URL=redis_url, CACHEWARM_BROKER_URL=broker_url, CACHEWARM_CONFIG=str(config),
               CACHEWARM_METRICS_PORT="0", PYTHONPATH=str(ROOT), **extra)
    return env


class Processes:
    """The subprocesses one test started, in `tmp` with `env`; `stop()` ends them all, by pid."""

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
        """Signals the process's own group and waits for the parent (SIGKILL if it outlives 20 s)."""
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
        """The test's end: SIGKILL to every process group at once (main process, pool children, sidecar), then each
        parent reaped. No check follows it; a warm shutdown is tested where it is the point (Host.stop, `kill(proc,
        SIGTERM)`, tests/worker/test_sidecar.py): here it cost each worker a second or two, one worker after another."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    def log(self, name: str) -> str:
        path = self.tmp / name
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}" for p in self.tmp.glob("*.log"))
