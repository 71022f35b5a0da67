"""`cachewarm run`: worker and beat (and, through the worker's install hooks, the invalidation consumer and the
metrics endpoint) in one command for one machine.

It runs `celery -A cachewarm.worker worker -B -Q <refresh queue>,<scan queue>` (cachewarm's queues only, named by
the settings) as a child in its own session, forwards SIGINT/SIGTERM to it once as
a SIGTERM (Celery's warm shutdown: tasks in hand finish), and kills the child's process group if it has not gone
after --grace seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from types import FrameType

import click

from ..tasks.reachable import start_failure
from .options import fail, load_settings


def worker_command(schedule: str, *, loglevel: str, concurrency: int | None, queues: tuple[str, ...]) -> list[str]:
    """The worker node's command line, consuming `queues` (the settings' refresh_queue and scan_queue)."""
    cmd = [sys.executable, "-m", "celery", "-A", "cachewarm.worker", "worker", "-B", "-s", schedule,
           "-Q", ",".join(dict.fromkeys(queues)), "--loglevel", loglevel, "--without-gossip", "--without-mingle"]
    if concurrency:
        cmd += ["--concurrency", str(concurrency)]
    return cmd


@click.command()
@click.option("--concurrency", "-c", type=int, default=None, help="worker processes (default: one per core)")
@click.option("--loglevel", "-l", default="WARNING", show_default=True)
@click.option("--grace", type=float, default=30.0, show_default=True,
              help="seconds a shutdown may take before the worker is killed")
def run(concurrency: int | None, loglevel: str, grace: float) -> None:
    """Run worker, beat, invalidation consumer and metrics endpoint in one command.

    Exits with status 1 and one line naming the (masked) URL when the cache or the broker does not answer at start;
    once running, lost connections are retried."""
    settings = load_settings(require_config=True)
    failure = start_failure(settings)  # the worker checks too; this says it before a worker starts at all
    if failure is not None:
        fail(f"cachewarm run: {failure}", 1)
    with tempfile.TemporaryDirectory(prefix="cachewarm-run-") as tmp:
        child = subprocess.Popen(worker_command(os.path.join(tmp, "beat-schedule"), loglevel=loglevel,
                                                concurrency=concurrency,
                                                queues=(settings.refresh_queue, settings.scan_queue)),
                                 start_new_session=True)
        stopping: list[float] = []

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if not stopping:
                stopping.append(time.monotonic())
                click.echo(f"cachewarm run: {signal.Signals(signum).name}, stopping", err=True)
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while child.poll() is None:
                if stopping and time.monotonic() - stopping[0] > grace:
                    os.killpg(child.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(0.2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    code = child.returncode
    raise SystemExit(0 if stopping and code in (0, -signal.SIGTERM) else (code if code > 0 else 1))
