"""`cachewarm.scan`: the beat task. Finds due hot keys (cachewarm.scan.scan) and enqueues their refresh, no more
than the refresh queue has room for (backlog.py)."""

from __future__ import annotations

from typing import Any

import redis

from ..redis_layer.connections import shared_client
from ..warming.scan import scan as scan_keyspaces
from . import backlog
from .context import REFRESH, settings_of


def scan(task: Any) -> int:
    """The bound task's body: enqueues one refresh task per batch of claimed keys; returns how many keys."""
    settings = settings_of(task.app)
    client: redis.Redis = shared_client(settings.redis_url, timeout=5.0, cluster=settings.redis_cluster)
    room = backlog.measure(task.app, settings, client)
    result = scan_keyspaces(client, settings, max_keys=room.keys)
    refresh = task.app.tasks[REFRESH]
    for batch in result.batches:
        refresh.apply_async(args=[batch])
    if result.ran:
        room.record(len(result.batches))
    return sum(len(b) for b in result.batches)
