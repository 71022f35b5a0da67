"""`cachewarm.scan`: the beat task. Finds due hot keys (cachewarm.scan.scan) and enqueues their refresh."""

from __future__ import annotations

import redis

from ..connections import shared_client
from ..scan import scan as scan_keyspaces
from ..worker.celery_app import app, app_settings
from .refresh import refresh

# Refresh batches allowed to wait in the broker queue: enough to keep every worker busy for a scan period or
# more, few enough that a batch runs long before its keys' claims lapse (scan.claim_ms).
MAX_QUEUED_BATCHES = 20
REFRESH_QUEUE = "celery"


def _redis(url: str) -> redis.Redis:
    return shared_client(url, timeout=5.0)


def queued_batches(broker_url: str) -> int:
    """Refresh batches waiting in the (Redis) broker's queue; 0 when that cannot be read."""
    try:
        return int(_redis(broker_url).llen(REFRESH_QUEUE))  # type: ignore[arg-type]
    except (redis.RedisError, ValueError):
        return 0


@app.task(name="cachewarm.scan", ignore_result=True, acks_late=False)  # type: ignore[untyped-decorator]
def scan() -> int:
    """Enqueues one refresh task per batch of claimed keys; returns how many keys."""
    settings = app_settings()
    room = max(0, MAX_QUEUED_BATCHES - queued_batches(settings.broker_url)) * settings.refresh_batch_size
    result = scan_keyspaces(_redis(settings.redis_url), settings, max_keys=room)
    for batch in result.batches:
        refresh.apply_async(args=[batch])
    return sum(len(b) for b in result.batches)
