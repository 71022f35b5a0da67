"""Refreshing the hot keys an invalidation names, at once; repeats coalesce.

The consumer hands each batch's hot keys to a callable it is given; this is the one the workers give it. It knows
nothing of what refreshes: it is built around a `start(keys, key_done)` that begins refreshing a batch, calls
`key_done(key)` (from any thread) as each key's refresh ends, and returns a future that ends with the batch (the
worker sidecar passes its refresh engine's `submit`; `threaded` runs a per-key load, such as a Cache's `lookup`, in
a thread pool). A key's next refresh starts when its own ends, not when its whole batch does: under a few events a
second per key most keys want one more refresh, and the batch's slowest key held every one of them back (issue 12:
a refresh ended 200 ms, at p50, before its batch under load).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

KeyDone = Callable[[str], None]
log = logging.getLogger("cachewarm.invalidation")


class HotRefresher:
    """Starts refreshes of hot keys at once, a batch at a time; repeats coalesce.

    While a key's refresh runs, any number of new requests for it become one more refresh after it: the running
    one may have fetched before the newest change and been fenced. `start(keys)` begins refreshing a batch and
    returns a future that ends when the batch is done, calling `key_done(key)` as each key's refresh ends (a key it
    never reports is done when the future ends)."""

    def __init__(self, start: Callable[[list[str], KeyDone], Future[Any]], *,
                 close: Callable[[], None] | None = None) -> None:
        self._start = start
        self._close = close
        self._lock = threading.Lock()
        self._again: dict[str, bool] = {}  # key -> another refresh wanted after the running one
        self.started = 0
        self.failed = 0

    @classmethod
    def threaded(cls, load: Callable[[str], object], *, workers: int = 32) -> HotRefresher:
        """Each key loaded by `load(key)` in a pool of `workers` threads (a Cache's `lookup`: its lease makes
        readers wait for the load instead of stampeding the source)."""
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cachewarm-hot-refresh")

        def start(keys: list[str], key_done: KeyDone) -> Future[Any]:
            futures = []
            for key in keys:
                future = pool.submit(load, key)
                future.add_done_callback(lambda f, key=key: key_done(key))  # type: ignore[misc]
                futures.append(future)
            return _gather(futures)

        return cls(start, close=lambda: pool.shutdown(wait=True, cancel_futures=True))

    def __call__(self, keys: list[str]) -> None:
        launch: list[str] = []
        with self._lock:
            for key in keys:
                if key in self._again:
                    self._again[key] = True
                else:
                    self._again[key] = False
                    launch.append(key)
        if launch:
            self._launch(launch)

    def _launch(self, keys: list[str]) -> None:
        self.started += len(keys)
        running = set(keys)  # this batch's keys whose end is not told yet

        def key_done(key: str) -> None:
            with self._lock:
                if key not in running:
                    return
                running.discard(key)
            self._done([key], None)

        def batch_done(error: BaseException | None) -> None:
            with self._lock:
                rest = list(running)
                running.clear()
            if rest:
                self._done(rest, error)

        try:
            future = self._start(keys, key_done)
        except Exception as exc:
            batch_done(exc)
            return
        future.add_done_callback(lambda f: batch_done(f.exception()))

    def _done(self, keys: list[str], error: BaseException | None) -> None:
        if error is not None:  # a failed refresh leaves a miss: the next reader loads
            self.failed += len(keys)
            log.debug("hot refresh of %d key(s) failed: %s", len(keys), error)
        again: list[str] = []
        with self._lock:
            for key in keys:
                if self._again.get(key):
                    self._again[key] = False
                    again.append(key)
                else:
                    self._again.pop(key, None)
        if again:
            self._launch(again)

    def close(self) -> None:
        if self._close is not None:
            self._close()


def _gather(futures: list[Future[Any]]) -> Future[None]:
    """A future that ends when all of `futures` have (with the first error, if any)."""
    combined: Future[None] = Future()
    remaining = [len(futures)]
    lock = threading.Lock()

    def one_done(f: Future[Any]) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            errors = [x.exception() for x in futures if x.exception() is not None]
            if errors:
                combined.set_exception(errors[0])  # type: ignore[arg-type]
            else:
                combined.set_result(None)

    if not futures:
        combined.set_result(None)
    for f in futures:
        f.add_done_callback(one_done)
    return combined
