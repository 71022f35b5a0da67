"""Celery tasks (named ``cachewarm.<name>``): thin wrappers over cachewarm.scan and cachewarm.refresh.

`register(app)` adds them to any Celery app, cachewarm's own (worker/celery_app.py) or a user's
(worker/install.py), with the options they need set on the tasks themselves rather than on the app: JSON
serialization, acks late and redelivery on a lost worker for the idempotent refresh, no results. (Their queues
come from routes, worker/queues.py: Celery 5.5+ deprecates the task's `queue` attribute.)
"""

from __future__ import annotations

from typing import Any

from celery import signals

from . import refresh, scan
from .context import REFRESH, SCAN, SETTINGS_KEY, settings_of

__all__ = ["REFRESH", "SCAN", "SETTINGS_KEY", "register", "settings_of"]


def register(app: Any) -> None:
    """Registers `cachewarm.refresh` and `cachewarm.scan` on `app` (lazily, as Celery's decorators do), and on no
    other app of the process (not shared)."""
    app.task(name=REFRESH, bind=True, shared=False, serializer="json", ignore_result=True,
             acks_late=True, reject_on_worker_lost=True)(refresh.refresh)
    # Not acks late: a scan that died is replaced by the next one, a period later.
    app.task(name=SCAN, bind=True, shared=False, serializer="json", ignore_result=True,
             acks_late=False)(scan.scan)
    signals.worker_process_shutdown.connect(refresh.drain, weak=False, dispatch_uid="cachewarm.refresh.drain-child")
