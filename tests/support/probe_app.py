"""cachewarm's own Celery app with one extra task, `probe`, for tests that must see every pool child work.

`celery -A tests.support.probe_app worker` is `celery -A cachewarm.worker worker` plus `cachewarm.test.probe`: it
refreshes one key through the child's refresh engine (a Redis connection, an HTTP request: the lazy imports a
child inherits the locks of), records the child's pid in the cache Redis set ``probe:pids`` and sleeps a little,
so that a burst of probes spreads over every child.
"""

from __future__ import annotations

import os
import time

import redis

from cachewarm.warming.refresh_engine import get_engine
from cachewarm.worker.celery_app import app, app_settings

PIDS_KEY = "probe:pids"


@app.task(name="cachewarm.test.probe", ignore_result=True)  # type: ignore[untyped-decorator]
def probe(key: str, linger: float) -> int:
    settings = app_settings()
    get_engine(settings).submit([key], force=True).result(30)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.sadd(PIDS_KEY, os.getpid())
    finally:
        client.close()
    time.sleep(linger)
    return os.getpid()


__all__ = ["app", "probe"]
