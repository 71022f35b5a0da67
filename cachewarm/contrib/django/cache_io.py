"""What `CachewarmCache`'s operations ask for, and the two drivers that answer: sync (`Cache`, redis-py) and
async (`AsyncCache`, redis.asyncio). The clients are the process's, shared by every backend instance with the same
settings (Django makes one instance per thread); an event loop has its own `AsyncCache`."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis

from ...client import AsyncCache, Cache
from ...errors import CacheUnavailable
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


Request = Call | Commands | Scan
Op = Generator[Request, Any, Any]


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


@contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise CacheUnavailable(f"redis is unavailable (django cache): {type(exc).__name__}") from None


def _pipeline(client: Any, commands: tuple[tuple[Any, ...], ...]) -> Any:
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return pipe


def run_request(cache: Cache, request: Request) -> Any:
    if isinstance(request, Call):
        return getattr(cache, request.method)(*request.args)
    with _redis_errors():
        if isinstance(request, Scan):
            return list(cache.redis.scan_iter(match=request.match, count=1000))
        if len(request.commands) == 1:
            return [cache.redis.execute_command(*request.commands[0])]  # type: ignore[no-untyped-call]
        return _pipeline(cache.redis, request.commands).execute()


async def arun_request(cache: AsyncCache, request: Request) -> Any:
    if isinstance(request, Call):
        return await getattr(cache, request.method)(*request.args)
    with _redis_errors():
        if isinstance(request, Scan):
            return [name async for name in cache.redis.scan_iter(match=request.match, count=1000)]
        if len(request.commands) == 1:
            return [await cache.redis.execute_command(*request.commands[0])]  # type: ignore[no-untyped-call,unused-ignore]
        return await _pipeline(cache.redis, request.commands).execute()


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
