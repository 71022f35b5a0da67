"""`cachewarm.scan`: the beat task. Finds due hot keys (cachewarm.scan.scan) and enqueues their refresh."""

from __future__ import annotations

import threading

import redis

from ..connections import sync_client
from ..scan import scan as scan_keyspaces
from ..worker.app import app, app_settings
from .refresh import refresh

_client: redis.Redis | None = None
_lock = threading.Lock()


def _redis() -> redis.Redis:
    global _client
    with _lock:
        if _client is None:
            _client = sync_client(app_settings().redis_url, timeout=5.0)
        return _client


@app.task(name="cachewarm.scan", ignore_result=True, acks_late=False)  # type: ignore[untyped-decorator]
def scan() -> int:
    """Enqueues one refresh task per batch of claimed keys; returns how many keys."""
    settings = app_settings()
    result = scan_keyspaces(_redis(), settings)
    for batch in result.batches:
        refresh.apply_async(args=[batch], expires=settings.scan_interval * 4)
    return sum(len(b) for b in result.batches)
