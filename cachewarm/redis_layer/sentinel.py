"""The cache through Redis Sentinel: ``redis+sentinel://[user:password@]host:port[,host:port...]/MASTER/DB``.

The URL names the sentinels, not the master: each client asks them for the current master and asks again when
its connection to the master breaks, so a failover needs no restart of anything. The user and password are the
master's (the sentinels are asked without them, as redis-py does by default). Clients get the same socket
timeouts and the same retry rule as the direct ones (connections.py): one retry on a broken connection, which is
also what sends a client to the new master after a failover.

The broker through Sentinel is Celery's own form, ``sentinel://host:port;sentinel://host:port`` with
`CACHEWARM_BROKER_SENTINEL_MASTER`; with a Sentinel cache and no broker URL, the broker defaults to the same
sentinels and master, database 1 (`broker_url_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.retry import Retry

SCHEME = "redis+sentinel"
DEFAULT_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    """What a ``redis+sentinel://`` URL says."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    username: str | None
    password: str | None


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SCHEME + "://")


def _host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [ipv6]:port
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"sentinel address {item!r} has no host")
    try:
        number = int(port) if port else DEFAULT_PORT
    except ValueError:
        raise ValueError(f"sentinel address {item!r}: port is not a number") from None
    if not 0 < number < 65536:
        raise ValueError(f"sentinel address {item!r}: port out of range")
    return host, number


def parse(url: str) -> SentinelURL:
    """The URL's parts; ValueError naming what is wrong (never the password)."""
    if not is_sentinel_url(url):
        raise ValueError(f"not a {SCHEME}:// URL")
    netloc = url[len(SCHEME) + 3:].split("/", 1)[0]
    userinfo, _, hosts = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    if not hosts:
        raise ValueError("names no sentinel (host:port[,host:port...])")
    sentinels = tuple(_host_port(item) for item in hosts.split(","))
    path = urlsplit(url).path.strip("/").split("/")
    if not path[0]:
        raise ValueError("names no master (…/MASTER/DB)")
    if len(path) > 2:
        raise ValueError("path must be /MASTER or /MASTER/DB")
    try:
        db = int(path[1]) if len(path) == 2 and path[1] else 0
    except ValueError:
        raise ValueError(f"database {path[1]!r} is not a number") from None
    return SentinelURL(sentinels, unquote(path[0]), db, username, password)


def broker_url_for(url: str, db: int = 1) -> tuple[str, str]:
    """Celery's ``sentinel://`` broker URL over the same sentinels and master (database `db`), and the master."""
    parts = parse(url)
    userinfo = url[len(SCHEME) + 3:].split("/", 1)[0].rpartition("@")[0]
    auth = userinfo + "@" if userinfo else ""
    hosts = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in parts.sentinels]
    return ";".join(f"sentinel://{auth}{host}/{db}" for host in hosts), parts.master


def _options(parts: SentinelURL, timeout: float, retry: Retry | AsyncRetry,
             max_connections: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "db": parts.db, "username": parts.username, "password": parts.password, "socket_timeout": timeout,
        "socket_connect_timeout": timeout, "retry": retry, "health_check_interval": 0,
    }
    if max_connections is not None:
        options["max_connections"] = max_connections
    return options


def _sentinel_options(timeout: float) -> dict[str, Any]:
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout}


def sync_client(url: str, *, timeout: float, retry: Retry, max_connections: int | None = None) -> redis.Redis:
    """A client of the master the sentinels name now (and again after each broken connection)."""
    parts = parse(url)
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(parts.sentinels), sentinel_kwargs=_sentinel_options(timeout))
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        parts.master, **_options(parts, timeout, retry, max_connections))
    return client


def async_client(url: str, *, timeout: float, retry: AsyncRetry,
                 max_connections: int | None = None) -> redis.asyncio.Redis:
    """The asyncio twin of `sync_client`."""
    parts = parse(url)
    sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(parts.sentinels), sentinel_kwargs=_sentinel_options(timeout))
    client: redis.asyncio.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        parts.master, **_options(parts, timeout, retry, max_connections))
    return client
