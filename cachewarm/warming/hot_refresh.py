"""Refreshing the hot keys an invalidation names, at once; repeats coalesce.

The invalidation consumer hands each batch's hot keys to a callable it is given; in a worker node that callable
writes them to a pipe (invalidation/handoff.py) whose reader, a thread of the sidecar, hands them to a
`HotRefresher` here. It knows nothing of what refreshes: it is built around a `start(keys, watch)` that begins
refreshing a batch and returns a future that ends with the batch, telling `watch` (from any thread) as each key's
source request goes (`fetching(key)`) and as its refresh ends (`done(key, written)`). The worker sidecar passes its
refresh engine's `submit` (refresh.KeyWatch); `threaded` runs a per-key load, such as a Cache's `lookup`, in a
thread pool.

While a key's refresh runs, new requests for it (each an invalidation applied before the request) become at most
one more refresh after it, and only when needed: a request made before the running refresh's source request went
is served by that refresh if it writes (its fetch sees the change; a write that an invalidation since its token
could make older is refused by the fence), so it needs one more only if the write did not happen; a request made
after needs one more whatever happens. A key's next refresh starts when its own ends, not when its whole batch
does (issue 12: under a few events a second per key most keys wanted one more refresh, and a batch's slowest key
held every one of them back, 200 ms at p50 under load).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

log = logging.getLogger("cachewarm.invalidation")

# What a key whose refresh runs wants after it.
NOTHING, UNLESS_WRITTEN, AGAIN = 0, 1, 2


class HotRefresher:
    """Starts refreshes of hot keys at once; repeats coalesce (see the module)."""

    def __init__(self, start: Callable[[list[str], HotRefresher], Future[Any]], *,
                 close: Callable[[], None] | None = None,
                 defer: Callable[[Callable[[], None]], None] | None = None) -> None:
        """`defer(f)`: calls f soon, after what is running now (the engine's loop: call_soon_threadsafe); with it,
        the keys that end in one turn and want one more refresh start it in one batch, not one batch each."""
        self._start = start
        self._close = close
        self._defer = defer
        self._queued: list[str] = []  # keys to refresh again, waiting for the deferred launch (scheduled when any)
        self._lock = threading.Lock()
        self._running: dict[str, list[int]] = {}  # key whose refresh runs -> [what it wants after, its launch]
        self._fetching: set[str] = set()          # those of them whose source request went
        self._launches = 0
        self.started = 0
        self.failed = 0
        self.spared = 0  # requests served by the refresh running when they came (no refresh more)

    @classmethod
    def threaded(cls, load: Callable[[str], object], *, workers: int = 32) -> HotRefresher:
        """Each key loaded by `load(key)` in a pool of `workers` threads (a Cache's `lookup`: its lease makes
        readers wait for the load instead of stampeding the source). Nothing is known of a load's fetch or write,
        so a request that comes while a key loads always makes one more load after it."""
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cachewarm-hot-refresh")

        def start(keys: list[str], watch: HotRefresher) -> Future[Any]:
            futures = []
            for key in keys:
                future = pool.submit(load, key)
                future.add_done_callback(lambda f, key=key: watch.done(key, False))  # type: ignore[misc]
                futures.append(future)
            return _gather(futures)

        return cls(start, close=lambda: pool.shutdown(wait=True, cancel_futures=True))

    def __call__(self, keys: list[str]) -> None:
        with self._lock:
            launch: list[str] = []
            for key in keys:
                state = self._running.get(key)
                if state is None:
                    launch.append(key)
                elif key in self._fetching:
                    state[0] = AGAIN
                elif state[0] == NOTHING:
                    state[0] = UNLESS_WRITTEN
            launch_id = self._register(launch) if launch else 0
        if launch:
            self._launch(launch, launch_id)

    # refresh.KeyWatch: told by the refresh of each key
    def fetching(self, key: str) -> None:
        with self._lock:
            if key in self._running:
                self._fetching.add(key)

    def done(self, key: str, written: bool) -> None:
        self._ended([key], None, written)

    def _register(self, keys: list[str]) -> int:
        """Marks `keys` running in a new launch (with the lock held); returns its id."""
        self._launches += 1
        for key in keys:
            self._running[key] = [NOTHING, self._launches]
        return self._launches

    def _launch(self, keys: list[str], launch_id: int) -> None:
        self.started += len(keys)
        try:
            future = self._start(keys, self)
        except Exception as exc:
            self._ended(keys, exc, False, launch_id)
            return
        future.add_done_callback(lambda f: self._ended(keys, f.exception(), False, launch_id))

    def _ended(self, keys: list[str], error: BaseException | None, written: bool,
               launch_id: int | None = None) -> None:
        """Keys whose refresh ended. With `launch_id` (its batch ended): only those still running in that launch
        (a key told done earlier may run again in a later one)."""
        again: list[str] = []
        ended = 0
        with self._lock:
            for key in keys:
                state = self._running.get(key)
                if state is None or (launch_id is not None and state[1] != launch_id):
                    continue
                ended += 1
                del self._running[key]
                self._fetching.discard(key)
                if state[0] == AGAIN or (state[0] == UNLESS_WRITTEN and not written):
                    again.append(key)
                elif state[0] == UNLESS_WRITTEN:
                    self.spared += 1
            schedule = False
            if again and self._defer is not None:
                for key in again:
                    self._running[key] = [NOTHING, 0]  # launch 0: waiting for the deferred launch
                schedule = not self._queued
                self._queued += again
                again = []
            again_id = self._register(again) if again else 0
        if error is not None and ended:  # a failed refresh leaves a miss: the next reader loads
            self.failed += ended
            log.debug("hot refresh of %d key(s) failed: %s", ended, error)
        if again:
            self._launch(again, again_id)
        if schedule:
            assert self._defer is not None
            self._defer(self._flush)

    def _flush(self) -> None:
        """The deferred launch: every key queued to refresh again since the last one, in one batch."""
        with self._lock:
            keys, self._queued = self._queued, []
            launch_id = self._register(keys) if keys else 0
        if keys:
            self._launch(keys, launch_id)

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
