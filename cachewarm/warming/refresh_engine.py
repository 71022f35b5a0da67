"""One asyncio loop per worker process, in a daemon thread, holding the clients that refreshes share.

Celery's prefork pool runs tasks in synchronous child processes; a refresh task hands its batch to this loop
(`submit`) and waits only while the loop already runs MAX_IN_FLIGHT batches (tasks/refresh.py, `wait_below`), so
the child takes its next task while the previous batch still waits for its slowest keys. The loop, its HTTP
client (sources.HttpPool: one aiohttp connection pool for the life of the process, called directly: measured at
concurrency 100 against a 50 ms source, httpx's default transport stalls near 130 requests/s, encode/httpx#3215,
and httpx over aiohttp's transport spent about a third of a refresh's CPU in httpx, issue 12), its async Redis
client and the worker's heartbeat are created on first use and created again in a forked child (a loop or a
socket cannot cross a fork).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import Counter
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

# aiohttp is imported here, by the worker's main process, so that its forked pool children inherit it: imported
# after the fork (config/sources.py imports it on first use), it and its TLS contexts cost each child 0.1-0.3 s of CPU.
import aiohttp  # noqa: F401

from ..settings import Settings
from .context import RefreshContext
from .heartbeat import beat_forever, worker_id
from .refresh import KeyWatch, refresh_batch

T = TypeVar("T")
log = logging.getLogger(__name__)


class RefreshEngine:
    """The process's refresh loop; use `get_engine()`."""

    def __init__(self, settings: Settings, *, flush_window: float | None = None) -> None:
        self.settings = settings
        self.flush_window = flush_window
        self.pid = os.getpid()
        self.worker_id = worker_id()
        self.loop = asyncio.new_event_loop()
        self._in_flight = 0
        self._in_flight_cond = threading.Condition()
        ready: Future[RefreshContext] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="cachewarm-refresh", daemon=True)
        self._thread.start()
        self.ctx = ready.result(30)

    def _run(self, ready: Future[RefreshContext]) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            ctx = RefreshContext.open(self.settings, self.worker_id, timeout=max(self.settings.redis_timeout, 5.0))
        except BaseException as exc:
            ready.set_exception(exc)
            return
        if self.flush_window is not None:
            ctx.pipeliner.window = self.flush_window
        self._heartbeat = self.loop.create_task(beat_forever(ctx.redis, ctx.layout, self.worker_id,
                                                             in_flight=lambda: self._in_flight))
        ready.set_result(ctx)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedules a coroutine on the engine's loop from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def submit(self, keys: Sequence[str], *, force: bool = False,
               watch: KeyWatch | None = None) -> Future[Counter[str]]:
        """Refreshes a batch on the engine's loop; the future gives the outcome counts. `watch` is told, on the
        loop, as each key's source request goes and as its refresh ends."""
        future = self.run(refresh_batch(self.ctx, list(keys), force=force, watch=watch))
        with self._in_flight_cond:
            self._in_flight += 1
        future.add_done_callback(self._batch_done)
        return future

    def _batch_done(self, future: Future[Counter[str]]) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.error("refresh batch failed", exc_info=future.exception())
        with self._in_flight_cond:
            self._in_flight -= 1
            self._in_flight_cond.notify_all()

    @property
    def in_flight(self) -> int:
        """Batches submitted and not finished yet."""
        return self._in_flight

    def wait_below(self, limit: int, timeout: float) -> bool:
        """Blocks until fewer than `limit` batches are in flight (False if `timeout` passed first)."""
        with self._in_flight_cond:
            return self._in_flight_cond.wait_for(lambda: self._in_flight < limit, timeout)

    def close(self) -> None:
        if self.pid != os.getpid() or not self.loop.is_running():
            return

        async def shutdown() -> None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            await self.ctx.aclose()

        try:
            self.run(shutdown()).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


_engine: RefreshEngine | None = None
_lock = threading.Lock()


def get_engine(settings: Settings | None = None, *, flush_window: float | None = None) -> RefreshEngine:
    """The engine of this process, created on first use and again after a fork. `flush_window` (seconds) replaces
    the pipeline window of pipeline.Pipeliner (the sidecar's hot refreshes: 0, latency first)."""
    global _engine
    with _lock:
        if _engine is None or _engine.pid != os.getpid():
            _engine = RefreshEngine(settings or Settings.load(), flush_window=flush_window)
        return _engine


def close_engine() -> None:
    global _engine
    with _lock:
        engine, _engine = _engine, None
    if engine is not None:
        engine.close()


def drain_engine(timeout: float) -> None:
    """Lets this process's batches in flight finish (at most `timeout` seconds), then closes the engine.

    A refresh task returns before its batch is done (tasks/refresh.py), so a pool child that exits (a warm
    shutdown, or `--max-tasks-per-child` recycling it) must finish what it already took rather than drop it."""
    with _lock:
        engine = _engine if _engine is not None and _engine.pid == os.getpid() else None
    if engine is None:
        return
    engine.wait_below(1, timeout)
    close_engine()
