"""Starts the node's sidecar process (sidecar.py) with the worker, and stops it with the worker.

A bootstep of the worker blueprint, in the main process. It starts no thread: the sidecar is a fork + exec
(`subprocess.Popen`), safe whatever the process holds, and the worker's own timer checks on it every few seconds,
starting it again if it died (an OOM kill, say), but not after a configuration error (exit status 2), which a new
start would only repeat. The sidecar gets the app's settings through its environment, so a worker built with
`create_app(settings)` and its sidecar agree.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from typing import Any

import celery
from celery import bootsteps

from ..metrics import multiprocess
from ..settings import Settings
from ..warming import heartbeat
from .children import CONFIG_ERROR, stop_child
from .queues import runs_cachewarm

log = logging.getLogger(__name__)

CHECK_INTERVAL = 5.0
STOP_TIMEOUT = 30.0  # the sidecar's own drain (sidecar.DRAIN_TIMEOUT) plus the consumer's stop


_fork_guard_installed = False


def _warn_on_fork_with_threads() -> None:
    """Before every fork of the main process: name any thread of cachewarm's that is running (a child could
    inherit a lock it holds). None should ever be: this is the alarm if a change brings one back."""
    ours = [t.name for t in threading.enumerate() if t.name.startswith("cachewarm") and t.is_alive()]
    if ours:
        log.warning("cachewarm: forking with thread(s) %s running; the child may block on a lock they hold",
                    ", ".join(ours))


def install_fork_guard() -> None:
    global _fork_guard_installed
    if not _fork_guard_installed:
        os.register_at_fork(before=_warn_on_fork_with_threads)
        _fork_guard_installed = True


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes `Settings.load()` in a child give `settings` back."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        env[f"CACHEWARM_{name.upper()}"] = str(value)
    return env


def sidecar_command(parent: int, loglevel: int | str) -> list[str]:
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
    return [sys.executable, "-m", "cachewarm.worker.sidecar", "--parent", str(parent), "--loglevel", str(level)]


class SidecarStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """The sidecar's lifecycle inside a worker node."""

    label = "cachewarm sidecar"

    def include_if(self, parent: Any) -> bool:
        # Only on a node that consumes cachewarm's refresh queue: another worker of an app cachewarm was installed
        # into (a team's own worker) runs no sidecar.
        return runs_cachewarm(parent)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.process: subprocess.Popen[bytes] | None = None
        self._env: dict[str, str] | None = None
        self._stopping = False
        self._timer_entry: Any = None

    def start(self, parent: Any) -> None:
        settings = getattr(getattr(getattr(parent, "app", None), "conf", None), "cachewarm_settings", None)
        if not isinstance(settings, Settings):
            settings = Settings.load()
        if not multiprocess.enabled():  # a worker whose worker_init handler did not run: children must inherit it
            multiprocess.enable()
        install_fork_guard()
        self._env = settings_env(settings)
        self._env[heartbeat.NODE_ENV] = str(getattr(parent, "hostname", "") or "")  # the node the sidecar beats for
        self._stopping = False
        self._spawn()
        timer = getattr(parent, "timer", None)
        if timer is not None:
            self._timer_entry = timer.call_repeatedly(CHECK_INTERVAL, self.check)

    def _spawn(self) -> None:
        level = logging.getLogger("cachewarm").getEffectiveLevel()
        self.process = subprocess.Popen(sidecar_command(os.getpid(), level), env=self._env)
        log.info("cachewarm sidecar started (pid %d)", self.process.pid)

    def check(self) -> None:
        """Starts the sidecar again if it exited (not after a configuration error, nor while stopping)."""
        proc = self.process
        if proc is None or self._stopping or proc.poll() is None:
            return
        if proc.returncode == CONFIG_ERROR:
            log.error("cachewarm sidecar exited on a configuration error; not restarted")
            self.process = None
            return
        log.warning("cachewarm sidecar (pid %d) exited with %s; starting it again", proc.pid, proc.returncode)
        self._spawn()

    def stop(self, parent: Any) -> None:
        self._stopping = True
        if self._timer_entry is not None:
            self._timer_entry.cancel()
            self._timer_entry = None
        proc, self.process = self.process, None
        if proc is not None:
            stop_child(proc, STOP_TIMEOUT, "cachewarm sidecar", log)

    shutdown = stop


def install(app: celery.Celery) -> None:
    """Adds the sidecar to the app's workers."""
    app.steps["worker"].add(SidecarStep)
