"""Whether the cache and the broker answer: asked once at a worker's start (worker/consumer.py), by `cachewarm run`
before it starts one, and by `cachewarm check-config --ping`.

At start, a server that does not answer within START_ATTEMPTS tries (a second or two: long enough for one being
started beside the worker) stops the process with one line naming its masked URL, instead of Celery's retry lines
(``Trying again in 2.00 seconds... (1/100)``, 95 of them in 25 s) that never name it. Once running, the existing
reconnect behaviour is unchanged (worker/consumer.py: a retry every 0.25 s; the read path's breaker).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import kombu.connection

from ..redis_layer.connections import REDIS_ERRORS, sync_client
from ..redis_layer.urls import unavailable
from ..settings import Settings

TIMEOUT = 2.0
START_ATTEMPTS = 3
START_PAUSE = 0.5
_Connection: Any = kombu.connection.Connection  # untyped


def cache_failure(settings: Settings, *, timeout: float = TIMEOUT) -> str | None:
    """None when the cache answers a PING, else ``redis unavailable at URL (...)``."""
    client = sync_client(settings.redis_url, timeout=timeout, cluster=settings.redis_cluster)
    try:
        client.ping()
    except REDIS_ERRORS as exc:
        return unavailable("redis", settings.redis_url, exc)
    finally:
        client.close()
    return None


def broker_failure(settings: Settings, *, timeout: float = TIMEOUT) -> str | None:
    """None when the broker accepts a connection (kombu, as Celery makes it), else ``broker unavailable at URL``."""
    options = {"master_name": settings.broker_sentinel_master} \
        if urlsplit(settings.broker_url).scheme == "sentinel" else {}
    conn = _Connection(settings.broker_url, connect_timeout=timeout, transport_options=options)
    try:
        conn.ensure_connection(max_retries=0)  # 0: the first failure raises (kombu's retry_over_time)
    except Exception as exc:  # kombu's OperationalError, an amqp or socket error: whatever the transport raises
        return unavailable("broker", settings.broker_url, exc)
    finally:
        conn.release()
    return None


def start_failure(settings: Settings, *, attempts: int = START_ATTEMPTS, pause: float = START_PAUSE) -> str | None:
    """The first of cache and broker that did not answer in `attempts` tries, or None when both did."""
    failure: str | None = None
    for attempt in range(attempts):
        failure = cache_failure(settings) or broker_failure(settings)
        if failure is None:
            return None
        if attempt + 1 < attempts:
            time.sleep(pause)
    return failure
