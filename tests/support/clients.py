"""Each client behind the other's interface, so a client test is written once and runs against both clients.

`BlockingAsyncCache` puts AsyncCache behind Cache's blocking interface (its event loop runs in a thread of its own,
so test threads can call it concurrently); `ThreadedCache` puts Cache behind AsyncCache's interface (each call in a
worker thread, as `asyncio.to_thread` does). A decorated function changes flavour on the way in (a plain function
becomes a coroutine function and back), so a decorator test, refusals included, means the same for both clients.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from cachewarm import AsyncCache, Cache

T = TypeVar("T")
FLAVOURS = ("sync", "async")
CALL_TIMEOUT = 60.0
_IO_METHODS = frozenset({"get", "lookup", "set", "delete", "exists", "clear", "invalidate_tag", "flush_stats"})


def _flipped(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The same function in the other flavour: a coroutine function made blocking, a plain one made async."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        def blocking(*args: Any, **kwargs: Any) -> Any:
            return asyncio.run(fn(*args, **kwargs))
        return blocking

    @functools.wraps(fn)
    async def awaitable(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)
    return awaitable


class _LoopThread:
    """An event loop running in a daemon thread; `run` blocks the caller until a coroutine finishes there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-async-client-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_TIMEOUT)

    def stop(self) -> None:
        self.run(self.loop.shutdown_default_executor())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(CALL_TIMEOUT)
        self.loop.close()


async def _construct(cls: type[T], *args: Any, **kwargs: Any) -> T:
    return cls(*args, **kwargs)


class _Constructors:
    """The clients' alternative constructors, for the adapters."""

    def __init__(self, redis_url: str | None = None, **kwargs: Any) -> None:
        raise NotImplementedError

    @classmethod
    def from_settings(cls, settings: Any = None) -> Any:
        return cls(settings=settings)

    @classmethod
    def from_url(cls, redis_url: str, **kwargs: Any) -> Any:
        return cls(redis_url, **kwargs)


class BlockingAsyncCache(_Constructors):
    """AsyncCache with Cache's blocking interface."""

    def __init__(self, redis_url: str | None = None, **kwargs: Any) -> None:
        self._loop = _LoopThread()
        self.client: AsyncCache = self._loop.run(_construct(AsyncCache, redis_url, **kwargs))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if name not in _IO_METHODS:
            return attr
        return lambda *args, **kwargs: self._loop.run(attr(*args, **kwargs))

    def close(self) -> None:
        self._loop.run(self.client.aclose())
        self._loop.stop()

    def __enter__(self) -> BlockingAsyncCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cached(self, key: str | None = None, *, ttl: float,
               tags: Iterable[str] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        decorate = self.client.cached(key, ttl=ttl, tags=tags)

        def outer(fn: Callable[..., Any]) -> Callable[..., Any]:
            wrapped = decorate(_flipped(fn))

            @functools.wraps(fn)
            def blocking(*args: Any, **kwargs: Any) -> Any:
                return self._loop.run(wrapped(*args, **kwargs))

            blocking.cache_clear = lambda: self._loop.run(wrapped.cache_clear())  # type: ignore[attr-defined]
            return blocking

        return outer


class ThreadedCache(_Constructors):
    """Cache with AsyncCache's interface: each call runs in a worker thread."""

    def __init__(self, redis_url: str | None = None, **kwargs: Any) -> None:
        self.client = Cache(redis_url, **kwargs)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if name not in _IO_METHODS:
            return attr

        async def threaded(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(attr, *args, **kwargs)
        return threaded

    async def aclose(self) -> None:
        await asyncio.to_thread(self.client.close)

    async def __aenter__(self) -> ThreadedCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def cached(self, key: str | None = None, *, ttl: float,
               tags: Iterable[str] = ()) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        decorate = self.client.cached(key, ttl=ttl, tags=tags)

        def outer(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
            wrapped = decorate(_flipped(fn))

            @functools.wraps(fn)
            async def threaded(*args: Any, **kwargs: Any) -> Any:
                return await asyncio.to_thread(wrapped, *args, **kwargs)

            async def cache_clear() -> int:
                return await asyncio.to_thread(wrapped.cache_clear)  # type: ignore[attr-defined, no-any-return]

            threaded.cache_clear = cache_clear  # type: ignore[attr-defined]
            return threaded

        return outer


def blocking_client(flavour: str) -> Any:
    """The class a blocking test builds its client with: Cache itself, or AsyncCache behind Cache's interface."""
    return Cache if flavour == "sync" else BlockingAsyncCache


def awaitable_client(flavour: str) -> Any:
    """The class an async test builds its client with: AsyncCache itself, or Cache behind AsyncCache's interface."""
    return AsyncCache if flavour == "async" else ThreadedCache
