"""Redis clients for each role, with timeouts that fit it.

The read path must never wait long on Redis: short socket timeouts and at most one immediate retry (redis-py 8's
defaults retry with backoff for seconds). Blocking waits (BLPOP on a lease) get their own client whose socket
timeout exceeds the wait. Errors are translated at this boundary by the callers; URLs are only ever shown masked.
"""

from __future__ import annotations

import threading

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import sentinel
from .errors import ConfigError
from .settings import mask_url


def _retry() -> Retry:
    # Retry once on a broken connection (a pooled socket Redis closed), never on a timeout: a retried timeout
    # doubles the read path's wait on a slow Redis, and a retried write may run twice.
    return Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))


def sync_client(url: str, *, timeout: float, max_connections: int | None = None) -> redis.Redis:
    try:
        if sentinel.is_sentinel_url(url):  # redis+sentinel://: the master the sentinels name (sentinel.py)
            return sentinel.sync_client(url, timeout=timeout, retry=_retry(), max_connections=max_connections)
        return redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=_retry(),
            max_connections=max_connections, health_check_interval=0,
        )
    except ValueError as exc:
        raise ConfigError(f"redis url {mask_url(url)}: {exc}") from None


def async_client(url: str, *, timeout: float, max_connections: int | None = None) -> redis.asyncio.Redis:
    try:
        if sentinel.is_sentinel_url(url):  # redis+sentinel://: the master the sentinels name (sentinel.py)
            return sentinel.async_client(url, timeout=timeout, retry=_retry(), max_connections=max_connections)
        return redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=_retry(),
            max_connections=max_connections, health_check_interval=0,
        )
    except ValueError as exc:
        raise ConfigError(f"redis url {mask_url(url)}: {exc}") from None


_shared: dict[tuple[str, float], redis.Redis] = {}
_shared_lock = threading.Lock()


def shared_client(url: str, *, timeout: float) -> redis.Redis:
    """The process's client for this URL and timeout, made on first use and kept: for callers that own no client
    but call often (a writer publishing after every commit, the beat's scan), so they reuse one pool.
    redis-py's pool notices a fork and starts afresh in the child."""
    with _shared_lock:
        client = _shared.get((url, timeout))
        if client is None:
            client = _shared[(url, timeout)] = sync_client(url, timeout=timeout)
        return client
