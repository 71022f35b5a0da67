"""The systems cachewarm is measured against, behind one small protocol.

Each system reads product `key_id` (the source's `GET /products/{key_id}`), caches it in Redis with the
benchmark's TTL and reports honestly whether *this* read was served from the cache without waiting for the
source: a read that fetched, or waited for another reader's fetch, is a miss.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import httpx
import redis

__all__ = ["SYSTEM_CLASSES", "CashewsEarly", "ClassicCacheAside", "LockedCacheAside", "System"]


@runtime_checkable
class System(Protocol):
    """What a benchmark drives. `read` is called concurrently from several threads."""

    name: ClassVar[str]

    def setup(self, redis_url: str, source_url: str, ttl: float, refresh_ahead: float) -> None: ...

    def read(self, key_id: int) -> tuple[Any, bool]:
        """(value, hit): hit is True only when the value came from the cache without waiting for the
        source."""
        ...

    def close(self) -> None: ...


def product_path(key_id: int) -> str:
    return f"/products/{key_id}"


def _http_client(source_url: str) -> httpx.Client:
    # One pooled client shared by the reader threads (httpx.Client is thread-safe); enough connections that
    # concurrent misses never queue for one.
    return httpx.Client(base_url=source_url, timeout=10.0,
                        limits=httpx.Limits(max_connections=256, max_keepalive_connections=256))


class ClassicCacheAside:
    """The tutorials' cache-aside: GET; on a miss fetch from the source and SETEX ttl. No stampede protection,
    no refresh ahead (`refresh_ahead` is ignored): a hot key misses once per TTL, with every reader that
    arrives during the fetch fetching too."""

    name: ClassVar[str] = "classic"
    prefix: ClassVar[str] = "classic:product:"

    def __init__(self) -> None:
        self._redis: redis.Redis | None = None
        self._http: httpx.Client | None = None
        self._ttl_ms = 0

    def setup(self, redis_url: str, source_url: str, ttl: float, refresh_ahead: float) -> None:
        self._redis = redis.Redis.from_url(redis_url, max_connections=1024)  # redis-py 8: 100 by default
        self._http = _http_client(source_url)
        self._ttl_ms = max(1, round(ttl * 1000))

    def _fetch(self, key_id: int) -> bytes:
        assert self._http is not None
        response = self._http.get(product_path(key_id))
        response.raise_for_status()
        return response.content

    def _fill(self, key: str, key_id: int) -> Any:
        assert self._redis is not None
        body = self._fetch(key_id)
        self._redis.psetex(key, self._ttl_ms, body)
        return json.loads(body)

    def read(self, key_id: int) -> tuple[Any, bool]:
        assert self._redis is not None
        key = f"{self.prefix}{key_id}"
        raw = self._redis.get(key)
        if raw is not None:
            return json.loads(raw), True
        return self._fill(key, key_id), False

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None


# KEYS[1] = lock, ARGV[1] = token: delete the lock only if it is still ours.
_RELEASE_LOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class LockedCacheAside(ClassicCacheAside):
    """Cache-aside with a SET NX PX lock against stampedes: on a miss one reader wins the lock, fetches,
    SETEXes and deletes the lock; the losers sleep-poll the value with a short exponential backoff and, if
    it has not appeared within `wait_limit`, fetch it themselves. Still no refresh ahead."""

    name: ClassVar[str] = "locked"
    prefix: ClassVar[str] = "locked:product:"

    def __init__(self, *, lock_ms: int = 2_000, wait_limit: float = 0.5, first_backoff: float = 0.005,
                 max_backoff: float = 0.05) -> None:
        super().__init__()
        self.lock_ms = lock_ms
        self.wait_limit = wait_limit
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self._release: Any = None

    def setup(self, redis_url: str, source_url: str, ttl: float, refresh_ahead: float) -> None:
        super().setup(redis_url, source_url, ttl, refresh_ahead)
        assert self._redis is not None
        self._release = self._redis.register_script(_RELEASE_LOCK)

    def read(self, key_id: int) -> tuple[Any, bool]:
        assert self._redis is not None
        key = f"{self.prefix}{key_id}"
        raw = self._redis.get(key)
        if raw is not None:
            return json.loads(raw), True
        lock = f"{key}:lock"
        token = uuid.uuid4().hex
        if self._redis.set(lock, token, nx=True, px=self.lock_ms):
            try:
                return self._fill(key, key_id), False
            finally:
                self._release(keys=[lock], args=[token])
        deadline = time.monotonic() + self.wait_limit
        backoff = self.first_backoff
        while time.monotonic() < deadline:
            time.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, self.max_backoff)
            raw = self._redis.get(key)
            if raw is not None:
                return json.loads(raw), False  # waited for the winner's fetch: a miss
        return self._fill(key, key_id), False


# cashews' early decorator runs the background refresh in a task whose coroutine is this function of
# cashews.decorators.cache.early; a fetch running in such a task is a refresh ahead, not a reader's miss.
_CASHEWS_BACKGROUND_CORO = "_get_result_for_early"


@dataclass
class _LoopState:
    """One reader thread's event loop, cashews Cache and httpx client."""

    loop: asyncio.AbstractEventLoop
    cache: Any
    http: httpx.AsyncClient
    read: Callable[[int], Awaitable[Any]]
    # Foreground (reader-blocking) fetches completed, per key: a read during which this grew waited for the
    # source, so it was a miss -- whether its own call fetched or it joined another call's fetch.
    foreground_fetches: Counter[int] = field(default_factory=Counter)
    background_fetches: int = 0


class CashewsEarly:
    """cashews (redis backend) with its `early` refresh:
    `@cache.early(ttl=ttl, early_ttl=ttl - refresh_ahead)` around an async httpx fetch. A read after
    `early_ttl` returns the cached value and starts one background recomputation (guarded by a Redis lock);
    a read of a missing key fetches in the foreground.

    Fairness: cashews is async, so each reader thread gets its own event loop, cashews `Cache` and
    httpx.AsyncClient, and runs each read with `run_until_complete` -- like one async worker process per
    reader. The alternative, one shared loop fed through `run_coroutine_threadsafe`, would add a cross-thread
    hand-off (two thread wake-ups) to every read, which the sync systems do not pay. The early-refresh lock is
    in Redis, so refreshes are still de-duplicated across the threads; cashews' in-process thunder protection
    only de-duplicates within one thread, like in separate processes. A thread's background refresh tasks run
    while that thread is in its next reads (the readers never pause, so they are not starved).
    """

    name: ClassVar[str] = "cashews-early"

    def __init__(self) -> None:
        self._redis_url = ""
        self._source_url = ""
        self._ttl = 0.0
        self._early_ttl = 0.0
        self._local = threading.local()
        self._states: list[_LoopState] = []
        self._states_lock = threading.Lock()
        self._counter = 0

    def setup(self, redis_url: str, source_url: str, ttl: float, refresh_ahead: float) -> None:
        self._redis_url = redis_url
        self._source_url = source_url
        self._ttl = ttl
        self._early_ttl = max(ttl - refresh_ahead, 0.001)

    def _state(self) -> _LoopState:
        state: _LoopState | None = getattr(self._local, "state", None)
        if state is None:
            state = self._new_state()
            self._local.state = state
        return state

    def _new_state(self) -> _LoopState:
        from cashews import Cache

        with self._states_lock:
            self._counter += 1
            number = self._counter
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        cache = Cache(name=f"bench-{number}")
        # suppress=False: a Redis error raises (and is counted) instead of silently becoming a miss.
        cache.setup(self._redis_url, suppress=False)
        http = httpx.AsyncClient(base_url=self._source_url, timeout=10.0)
        counts: Counter[int] = Counter()
        holder: dict[str, _LoopState] = {}

        async def fetch(key_id: int) -> Any:
            task = asyncio.current_task()
            background = task is not None and \
                getattr(task.get_coro(), "__name__", "") == _CASHEWS_BACKGROUND_CORO
            try:
                response = await http.get(product_path(key_id))
                response.raise_for_status()
                return response.json()
            finally:
                if background:
                    holder["state"].background_fetches += 1
                else:
                    counts[key_id] += 1

        read = cache.early(ttl=self._ttl, early_ttl=self._early_ttl, key="product:{key_id}")(fetch)
        state = _LoopState(loop=loop, cache=cache, http=http, read=read, foreground_fetches=counts)
        holder["state"] = state
        loop.run_until_complete(cache.init())
        with self._states_lock:
            self._states.append(state)
        return state

    def read(self, key_id: int) -> tuple[Any, bool]:
        state = self._state()
        before = state.foreground_fetches[key_id]
        value = state.loop.run_until_complete(state.read(key_id))
        return value, state.foreground_fetches[key_id] == before

    @property
    def background_fetches(self) -> int:
        return sum(s.background_fetches for s in self._states)

    def close(self) -> None:
        with self._states_lock:
            states, self._states = self._states, []
        for state in states:
            # The reader threads are gone; their loops are idle and can be finished from this thread.
            state.loop.run_until_complete(self._shutdown(state))
            state.loop.close()

    @staticmethod
    async def _shutdown(state: _LoopState) -> None:
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await state.http.aclose()
        await state.cache.close()


SYSTEM_CLASSES: list[type[System]] = [ClassicCacheAside, LockedCacheAside, CashewsEarly]
