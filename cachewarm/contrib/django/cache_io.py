"""What `CachewarmCache`'s operations ask for, and the two drivers that answer: sync (`Cache`, redis-py) and
async (`AsyncCache`, redis.asyncio). The clients are the process's, shared by every backend instance with the same
settings (Django makes one instance per thread); an event loop has its own `AsyncCache`.

One error policy for both drivers (as Django's backends and django-redis have it): only what says Redis cannot
serve (a connection refused or lost, a timeout, a cluster without a master for a slot, a replica that became
read-only, a server out of memory) is `CacheUnavailable`; an error of the caller's making (a command Redis refused
for the value it found: INCRBY of a pickled value, WRONGTYPE; an argument redis-py refused) goes through as
redis-py raised it, for the operation to translate (`incr` makes it Django's TypeError).

Blocking work of an operation (pickling a value, which may run SQL for a queryset; unpickling a large one) is a
`Work` request: the sync driver runs it in place, the async one in a thread as Django's own backends do
(`sync_to_async`, thread-sensitive: the SQL runs where the request's connection lives), never on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from asgiref.sync import sync_to_async

from ...client import AsyncCache, Cache
from ...errors import CacheUnavailable
from ...redis_layer import envelope
from ...settings import Settings


@dataclass(frozen=True)
class Call:
    """A request: a method of the cachewarm client (`Cache` or `AsyncCache`, whichever the driver holds)."""

    method: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Commands:
    """A request: Redis commands in one round trip (a pipeline when several); the answer is their replies."""

    commands: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class Scan:
    """A request: every Redis key matching a pattern."""

    match: str


@dataclass(frozen=True)
class Head:
    """A request: the first bytes of a keyspace key's cached entry (its expiry, fetched time and kind), None when
    Redis has none: whether a value is cached, without reading (or loading) the value."""

    key: str


@dataclass(frozen=True)
class Work:
    """A request: a blocking function call (pickling, unpickling); the answer is what it returns."""

    function: Callable[..., Any]
    args: tuple[Any, ...] = ()


Request = Call | Commands | Scan | Head | Work
Op = Generator[Request, Any, Any]

# An entry's head: "<expires_ms:13>|<fetched_ms:13>|<kind:1>" (envelope.py), the kind b"v" (a value) or b"n" (the
# source had no such item, remembered for negative_ttl).
HEAD_BYTES = envelope.TIMES + 2


def holds_value(head: bytes | None) -> bool:
    """True when an entry's head (a `Head` answer) is a fresh value: not absent, not expired, not a remembered
    "no such item" (for which `get` answers the default)."""
    return (head is not None and len(head) == HEAD_BYTES and head[-1:] == envelope.VALUE
            and envelope.expires_ms(head) > time.time() * 1000)


class _Shared:
    """The process's clients for one set of settings: a `Cache`, and an `AsyncCache` per event loop. Keyed by the
    identity of a canonical Settings object (`canonical`: one per distinct value), so that a read does not hash a
    whole Settings; the canonical objects are kept, so their ids are never reused."""

    _lock = threading.Lock()
    _canonical: dict[Settings, Settings] = {}
    _sync: dict[int, Cache] = {}
    _async: weakref.WeakKeyDictionary[Any, dict[int, AsyncCache]] = weakref.WeakKeyDictionary()

    @classmethod
    def canonical(cls, settings: Settings) -> Settings:
        with cls._lock:
            return cls._canonical.setdefault(settings, settings)

    @classmethod
    def sync(cls, settings: Settings) -> Cache:
        cache = cls._sync.get(id(settings))
        if cache is None:
            with cls._lock:
                cache = cls._sync.get(id(settings))
                if cache is None:
                    cache = cls._sync[id(settings)] = Cache(settings=settings, keyspaces=settings.load_keyspaces())
        return cache

    @classmethod
    def for_loop(cls, settings: Settings) -> AsyncCache:
        loop = asyncio.get_running_loop()
        per_loop = cls._async.get(loop)
        cache = per_loop.get(id(settings)) if per_loop is not None else None
        if cache is None:
            with cls._lock:
                per_loop = cls._async.setdefault(loop, {})
                cache = per_loop.get(id(settings))
                if cache is None:
                    cache = per_loop[id(settings)] = AsyncCache(settings=settings,
                                                                keyspaces=settings.load_keyspaces())
        return cache


def canonical(settings: Settings) -> Settings:
    """The one Settings object of this value the shared clients are kept for."""
    return _Shared.canonical(settings)


def shared_cache(settings: Settings) -> Cache:
    return _Shared.sync(canonical(settings))


def loop_cache(settings: Settings) -> AsyncCache:
    return _Shared.for_loop(canonical(settings))


def canonical_shared_cache(settings: Settings) -> Cache:
    """`shared_cache` for a Settings object `canonical` returned (no hashing: the read path's)."""
    return _Shared.sync(settings)


def canonical_loop_cache(settings: Settings) -> AsyncCache:
    return _Shared.for_loop(settings)


# Redis cannot serve: every other RedisError is about the command or its data (the caller's), and goes through.
UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.ConnectionError, redis.TimeoutError,  # refused, reset, auth, loading, max clients; a timeout
    redis.exceptions.InvalidResponse,  # a connection that answered garbage
    redis.exceptions.ClusterError, redis.exceptions.TryAgainError,  # CLUSTERDOWN, MASTERDOWN; a slot migrating
    redis.exceptions.RedisClusterException,  # the slots could not be learnt, a slot without a master
    redis.exceptions.ReadOnlyError,  # a write that reached a replica (a failover in progress)
    redis.exceptions.OutOfMemoryError,  # maxmemory reached with a noeviction policy
)


@contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except UNAVAILABLE as exc:
        raise CacheUnavailable(f"redis is unavailable (django cache): {type(exc).__name__}") from None


def _pipeline(client: Any, commands: tuple[tuple[Any, ...], ...]) -> Any:
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return pipe


def run_request(cache: Cache, request: Request) -> Any:
    if isinstance(request, Call):
        return getattr(cache, request.method)(*request.args)
    if isinstance(request, Work):
        return request.function(*request.args)
    with _redis_errors():
        if isinstance(request, Head):
            return cache.redis.execute_command(  # type: ignore[no-untyped-call]
                "GETRANGE", cache.layout.value(request.key), 0, HEAD_BYTES - 1) or None
        if isinstance(request, Scan):
            return list(cache.redis.scan_iter(match=request.match, count=1000))
        if len(request.commands) == 1:
            return [cache.redis.execute_command(*request.commands[0])]  # type: ignore[no-untyped-call]
        return _pipeline(cache.redis, request.commands).execute()


async def arun_request(cache: AsyncCache, request: Request) -> Any:
    if isinstance(request, Call):
        return await getattr(cache, request.method)(*request.args)
    if isinstance(request, Work):
        return await sync_to_async(request.function)(*request.args)
    with _redis_errors():
        if isinstance(request, Head):
            return await cache.redis.execute_command(  # type: ignore[no-untyped-call,unused-ignore]
                "GETRANGE", cache.layout.value(request.key), 0, HEAD_BYTES - 1) or None
        if isinstance(request, Scan):
            return [name async for name in cache.redis.scan_iter(match=request.match, count=1000)]
        if len(request.commands) == 1:
            return [await cache.redis.execute_command(*request.commands[0])]  # type: ignore[no-untyped-call,unused-ignore]
        return await _pipeline(cache.redis, request.commands).execute()


def run_op(cache: Cache, op: Op) -> Any:
    """The sync driver: runs `op`'s requests one after the other, each answer sent back in; `op`'s result."""
    reply: Any = None
    try:
        while True:
            reply = run_request(cache, op.send(reply))
    except StopIteration as stop:
        return stop.value


async def arun_op(cache: AsyncCache, op: Op) -> Any:
    """The async driver of the same operation."""
    reply: Any = None
    try:
        while True:
            reply = await arun_request(cache, op.send(reply))
    except StopIteration as stop:
        return stop.value


def close_clients() -> None:
    """Closes the process's shared sync clients (at shutdown, or between tests); later calls make new ones."""
    with _Shared._lock:
        caches, _Shared._sync = list(_Shared._sync.values()), {}
    for cache in caches:
        cache.close()


async def aclose_loop_clients() -> None:
    """Closes the running event loop's `AsyncCache`s (before the loop ends: an ASGI server's shutdown, a test)."""
    with _Shared._lock:
        caches = list(_Shared._async.pop(asyncio.get_running_loop(), {}).values())
    for cache in caches:
        await cache.aclose()
