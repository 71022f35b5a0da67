"""In-process single flight: one call per key at a time; the callers that arrive meanwhile share its result.

`SingleFlight` serves threads (Cache), `AsyncSingleFlight` the tasks of one event loop (AsyncCache). The generated
sync client names `SingleFlight` where the async one names `AsyncSingleFlight` (scripts/unasync.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """One call per key at a time in this process (across threads); the others get its result or its error."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, Future[T]] = {}

    def run(self, key: str, fn: Callable[[], T]) -> T:
        with self._lock:
            future = self._calls.get(key)
            leader = future is None
            if future is None:
                future = self._calls[key] = Future()
        if not leader:
            return future.result()
        try:
            result = fn()
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(result)
            return result
        finally:
            with self._lock:
                del self._calls[key]


class AsyncSingleFlight(Generic[T]):
    """One call per key at a time on this event loop; the other tasks await its result (shielded: a waiter's
    cancellation does not cancel the leader's load)."""

    def __init__(self) -> None:
        self._calls: dict[str, asyncio.Future[T]] = {}

    async def run(self, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        future = self._calls.get(key)
        if future is not None:
            return await asyncio.shield(future)
        future = self._calls[key] = asyncio.get_running_loop().create_future()
        try:
            result = await fn()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: no "never retrieved" warning when nobody waited
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._calls[key]
