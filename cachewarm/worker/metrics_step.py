"""Wires cachewarm's metrics into a Celery worker.

- main process, before the pool forks (``worker_init``), on a node that consumes cachewarm's refresh queue only
  (queues.py: a team worker of an app cachewarm is installed into is left alone): multiprocess mode on (a fresh
  directory per worker node), the per-process metrics created and the Prometheus hooks installed, so that
  children inherit both;
- each pool child (``worker_process_init``) of such a node: makes sure the hooks are installed; on exit
  (``worker_process_shutdown``) it is marked dead, its counters staying in the sum;
- the ``/metrics`` endpoint runs in the node's sidecar process (sidecar.py), not here: the main process forks
  children all its life and must hold no thread of cachewarm's;
- main process, at ``worker_shutdown``: the directory made by ``enable()`` is removed.

Nothing here imports prometheus_client at module level: the app imports this module, and a process that only
sends tasks or runs beat must not have prometheus_client's mode fixed by it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import celery
from celery import signals

from ..errors import ConfigError
from ..metrics import multiprocess
from ..settings import Settings
from ..tasks import settings_of
from .queues import runs_cachewarm

log = logging.getLogger(__name__)

# The settings of the app whose worker this process is (or was forked from): the app's own, as the sidecar's
# (sidecar_step.py), so a worker built with explicit settings counts under its keyspaces, not the environment's.
_settings: Settings | None = None


def _install_hooks(settings: Settings | None) -> None:
    names: list[str] = []
    try:
        names = (settings or Settings.load()).load_keyspaces().names()  # the environment's: no app seen here
    except ConfigError as exc:
        log.error("cachewarm metrics disabled: %s", exc)
    # Imported here: it imports prometheus_client, which must not be imported before multiprocess.enable().
    from ..metrics.process import register_process_metrics

    register_process_metrics(None, keyspaces=names)


def on_worker_init(sender: Any = None, **_: Any) -> None:
    global _settings
    if not runs_cachewarm(sender):
        return
    _settings = settings_of(sender.app)  # runs_cachewarm: the worker has an app
    multiprocess.enable()
    _install_hooks(_settings)


def on_child_init(**_: Any) -> None:
    if multiprocess.enabled():
        _install_hooks(_settings)  # the main process's, inherited by the fork


def on_child_shutdown(pid: int | None = None, **_: Any) -> None:
    if multiprocess.enabled():
        multiprocess.mark_dead(pid or os.getpid())


def on_worker_shutdown(**_: Any) -> None:
    multiprocess.cleanup()


def install(app: celery.Celery) -> None:
    """Connect the worker signals that set up metrics (once per process, whatever the number of apps)."""
    signals.worker_init.connect(on_worker_init, weak=False, dispatch_uid="cachewarm.metrics.init")
    signals.worker_process_init.connect(on_child_init, weak=False, dispatch_uid="cachewarm.metrics.child")
    signals.worker_process_shutdown.connect(on_child_shutdown, weak=False, dispatch_uid="cachewarm.metrics.exit")
    signals.worker_shutdown.connect(on_worker_shutdown, weak=False, dispatch_uid="cachewarm.metrics.shutdown")
