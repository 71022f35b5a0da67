"""Redis clients for each role, with timeouts that fit it, on one Redis or a Redis Cluster.

The read path must never wait long on Redis: short socket timeouts and at most one immediate retry (redis-py 8's
defaults retry with backoff for seconds). Blocking waits (BLPOP on a lease) get their own client whose socket
timeout exceeds the wait. Errors are translated at this boundary by the callers; URLs are only ever shown masked.

Topology: `cluster=True` (``CACHEWARM_REDIS_CLUSTER=true``) gives redis-py's RedisCluster (sync or asyncio) over
the node the URL names (it discovers the others); ``redis+sentinel://`` URLs go to sentinel.py; anything else is
one Redis. A one-Redis client checks, once per new connection (one INFO round trip, never per command), that the
server is not a cluster node: a cluster reached without cluster mode would half-work (keys on other nodes answer
MOVED), so it fails at once with a ConfigError naming CACHEWARM_REDIS_CLUSTER instead.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import ConfigError
from .urls import mask_url

# What a Redis failure raises: redis-py's cluster client also raises RedisClusterException (not a RedisError) when it
# cannot learn the slots, and SlotNotCoveredError while a failed master's slots have no owner yet.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, redis.exceptions.RedisClusterException)

NOT_CLUSTER_MODE = ("{url} is a Redis Cluster node: set CACHEWARM_REDIS_CLUSTER=true to use it as the cache "
                    "(without it, keys on the other nodes would fail with MOVED)")
NOT_A_CLUSTER = "{url} is not a Redis Cluster node: unset CACHEWARM_REDIS_CLUSTER, or name a node of the cluster"


def _retry() -> Retry:
    # Retry once on a broken connection (a pooled socket Redis closed), never on a timeout: a retried timeout
    # doubles the read path's wait on a slow Redis, and a retried write may run twice.
    return Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))


def _async_retry() -> AsyncRetry:
    # The same policy as redis-py's asyncio object: an asyncio client handed the synchronous Retry converts it and
    # warns (redis-py 8.2), and a coroutine-aware retry is what its connections await.
    return AsyncRetry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))


def _cluster_enabled(info: Any) -> bool:
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    return "cluster_enabled:1" in text


def _not_a_cluster_node(url: str) -> Any:
    def check(conn: Any) -> None:
        conn.on_connect()
        conn.send_command("INFO", "cluster")
        try:
            info = conn.read_response()
        except redis.ResponseError:  # INFO not allowed to this ACL user: nothing to tell
            return
        if _cluster_enabled(info):
            conn.disconnect()
            raise ConfigError(NOT_CLUSTER_MODE.format(url=mask_url(url)))
    return check


def _not_a_cluster_node_async(url: str) -> Any:
    async def check(conn: Any) -> None:
        await conn.on_connect()
        await conn.send_command("INFO", "cluster")
        try:
            info = await conn.read_response()
        except redis.ResponseError:
            return
        if _cluster_enabled(info):
            await conn.disconnect()
            raise ConfigError(NOT_CLUSTER_MODE.format(url=mask_url(url)))
    return check


class AsyncClusterClient(redis.asyncio.cluster.RedisCluster):
    """redis-py's asyncio cluster client, with one fix. While it learns the slots (at its first commands, and again
    after a broken connection) it replaces node objects and closes their connections, including one another task
    has just taken, whose command then fails with AttributeError while connecting, before it is sent (no stream:
    tests/read/test_stampede.py's fifty concurrent first reads hit it about once in 125 commands). Such a command is
    sent once more; failing again, it is raised as the broken connection it is (readers fall back to the source)."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except AttributeError:
            pass
        try:
            return await super().execute_command(*args, **kwargs)
        except AttributeError as exc:
            raise redis.ConnectionError(f"connection closed under the command ({exc})") from exc


class _StreamKeys:
    """redis-py's key finder of a sync cluster client, reading the keys of XREAD and XREADGROUP from their STREAMS
    argument itself (as redis-py does for EVAL/EVALSHA's numkeys) instead of asking the server. redis-py 8.1 asks
    by `COMMAND GETKEYS` (movable keys), twice per call, and asks the client's default node, the one the URL named:
    a round trip each, and while that node is down (its master SIGKILLed, before the failover or for good) every
    XREAD / XREADGROUP failed with ConnectionError, so the invalidation consumer stopped reading until that node
    was back (tests/invalidation/test_cluster_failover_consumer.py). Everything else goes to redis-py's parser."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get_keys(self, redis_conn: Any, *args: Any) -> Any:
        if args and args[0] in _STREAM_READS:  # one set lookup for every other command (a GET's routing)
            keys = stream_keys(args)
            if keys is not None:
                return keys
        return self._inner.get_keys(redis_conn, *args)


_STREAM_READS = frozenset({"XREAD", "XREADGROUP", "xread", "xreadgroup", b"XREAD", b"XREADGROUP"})


def stream_keys(args: tuple[Any, ...]) -> list[Any] | None:
    """The stream keys of an XREAD / XREADGROUP command (None for any other command, or one it cannot read)."""
    name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
    if name.upper() not in ("XREAD", "XREADGROUP"):
        return None
    start = 4 if name.upper() == "XREADGROUP" else 1  # after GROUP <group> <consumer>: names may be "streams"
    for i in range(start, len(args)):
        word = args[i].decode() if isinstance(args[i], bytes) else str(args[i])
        if word.upper() == "STREAMS":
            rest = args[i + 1:]
            return list(rest[:len(rest) // 2]) if rest and len(rest) % 2 == 0 else None
    return None


class ClusterClient(redis.cluster.RedisCluster):
    """redis-py's sync cluster client, whose pipelines never send a WAIT again elsewhere. A pipelined command whose
    connection broke is resent alone through the client, routed afresh; WAIT (keyless) then goes to every master,
    on connections that wrote nothing, and returns at once: the invalidation apply path (fence_replica_wait) would
    take its master's death for a replica's acknowledgement. Its connection error is its reply instead."""

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)  # type: ignore[no-untyped-call]
        resend = pipe.parent_execute_command

        def parent_execute_command(*args: Any, **kwargs: Any) -> Any:
            if str(args[0]).upper() == "WAIT":
                raise redis.ConnectionError("the connection of a WAIT broke: not sent again to other nodes")
            return resend(*args, **kwargs)

        pipe.parent_execute_command = parent_execute_command
        return pipe


def _cluster_client(url: str, options: dict[str, Any]) -> redis.cluster.RedisCluster:
    client = ClusterClient.from_url(url, **options)
    client.commands_parser = _StreamKeys(client.commands_parser)  # type: ignore[assignment]
    return client


def _options(timeout: float, max_connections: int | None, *, asyncio: bool = False) -> dict[str, Any]:
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                               "retry": _async_retry() if asyncio else _retry(), "health_check_interval": 0}
    if max_connections is not None:
        options["max_connections"] = max_connections
    return options


def _sentinel() -> Any:
    from . import sentinel  # only for redis+sentinel:// URLs
    return sentinel


def sync_client(url: str, *, timeout: float, max_connections: int | None = None,
                cluster: bool = False) -> redis.Redis:
    """A client of the cache (RedisCluster when `cluster`; its interface is Redis's for what cachewarm uses)."""
    try:
        if cluster:
            return _cluster_client(url, _options(timeout, max_connections))  # type: ignore[return-value]
        if url.startswith("redis+sentinel://"):
            return _sentinel().sync_client(url, timeout=timeout, retry=_retry(),  # type: ignore[no-any-return]
                                           max_connections=max_connections)
        options = _options(timeout, max_connections)
        return redis.Redis.from_url(url, redis_connect_func=_not_a_cluster_node(url), **options)
    except ValueError as exc:
        raise ConfigError(f"redis url {mask_url(url)}: {exc}") from None
    except REDIS_ERRORS as exc:  # RedisCluster asks a node for the slots as it is built
        if "cluster mode is not enabled" in str(exc).lower():
            raise ConfigError(NOT_A_CLUSTER.format(url=mask_url(url))) from None
        raise redis.ConnectionError(f"redis cluster {mask_url(url)}: {exc}") from None


def async_client(url: str, *, timeout: float, max_connections: int | None = None,
                 cluster: bool = False) -> redis.asyncio.Redis:
    """The asyncio twin of `sync_client` (a cluster client learns the slots at its first command)."""
    try:
        if cluster:
            return AsyncClusterClient.from_url(  # type: ignore[return-value]
                url, **_options(timeout, max_connections, asyncio=True))
        if url.startswith("redis+sentinel://"):
            return _sentinel().async_client(url, timeout=timeout, retry=_async_retry(),  # type: ignore[no-any-return]
                                            max_connections=max_connections)
        options = _options(timeout, max_connections, asyncio=True)
        return redis.asyncio.Redis.from_url(url, redis_connect_func=_not_a_cluster_node_async(url), **options)
    except ValueError as exc:
        raise ConfigError(f"redis url {mask_url(url)}: {exc}") from None


_shared: dict[tuple[str, float, bool], redis.Redis] = {}
_shared_lock = threading.Lock()


def shared_client(url: str, *, timeout: float, cluster: bool = False) -> redis.Redis:
    """The process's client for this URL and timeout, made on first use and kept: for callers that own no client
    but call often (a writer publishing after every commit, the beat's scan), so they reuse one pool.
    redis-py's pool notices a fork and starts afresh in the child."""
    with _shared_lock:
        client = _shared.get((url, timeout, cluster))
        if client is None:
            client = _shared[(url, timeout, cluster)] = sync_client(url, timeout=timeout, cluster=cluster)
        return client
