"""The Celery side of cachewarm: `celery -A cachewarm.worker worker` and `celery -A cachewarm.worker beat`.

The app is built when `cachewarm.worker.app` is first read (Celery's `-A` does that), not when this package is
imported: the sidecar process (`python -m cachewarm.worker.sidecar`) lives here too and has no use for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    app: Celery

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from .celery_app import app

        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
