"""The Celery side of cachewarm: `celery -A cachewarm.worker worker` and `celery -A cachewarm.worker beat`."""

from __future__ import annotations

from .app import app

__all__ = ["app"]
