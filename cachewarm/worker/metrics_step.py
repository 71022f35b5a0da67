"""Wires cachewarm's metrics into a Celery worker (multiprocess mode, endpoint in the main process)."""

from __future__ import annotations

import celery


def install(app: celery.Celery) -> None:
    """Connect the worker signals that set up metrics; called once by cachewarm.worker.app."""
