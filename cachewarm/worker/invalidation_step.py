"""Runs the invalidation consumer inside a Celery worker's main process (filled in by the invalidation issue)."""

from __future__ import annotations

import celery


def install(app: celery.Celery) -> None:
    """Adds the invalidation consumer to the app's workers."""
