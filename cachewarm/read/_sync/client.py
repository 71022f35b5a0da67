"""The read-through client for threads: `Cache`. GENERATED from cachewarm/read/_async/client.py (the one source
of both clients) by tools/unasync.py: do not edit; edit the async source and run
`.venv/bin/python tools/unasync.py`.

A hit is one GET; its accounting is one append to the process's access buffer (lookup.py, access.py). A miss goes
through the in-process single flight (singleflight.py: one loader per key per process), then the cluster-wide lease
(lua/acquire.lua): one process loads from the source and writes with the fence token it took with the lease
(lua/write.lua); the others block on a wake-up list rather than poll. When Redis fails, readers go straight to the
source (still one load per key per process) and the breaker (breaker.py) skips Redis for `redis_backoff` seconds.
Everything about a key that needs no I/O (its plan, the script calls) comes from plans.py.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx

from ...config.keyspaces import KeyspaceRegistry, check_key
from ...config.sources import Fetched
from ...errors import CacheUnavailable, SourceError
from ...hooks import get_hooks
from ...near.cache import Ticket, near_cache_for
from ...outcomes import SourceOutcome
from ...redis_layer import envelope, scripts
from ...redis_layer.connections import REDIS_ERRORS, sync_client
from ...redis_layer.script_calls import AcquireStatus, WriteStatus
from ...settings import Settings
from ..breaker import Breaker
from ..decorated import check_function, clear_prefix, function_key
from ..lookup import Lookup, ReadAccounting, is_fresh, loaded
from ..plans import Plan, Planner
from ..singleflight import SingleFlight

R = TypeVar("R")
CLEAR_BATCH = 500  # SCANned keys invalidated per pipeline by clear()

Fetch = Callable[[Plan], Fetched]


@contextmanager
def _unavailable(operation: str) -> Iterator[None]:
    """A write's Redis error, as the CacheUnavailable callers catch."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise CacheUnavailable(f"redis is unavailable ({operation}): {type(exc).__name__}") from None


class Cache:
    """Read-through cache client: the async one serves the tasks of one event loop, the sync one any threads.

    `get`/`lookup` read through the keyspaces' sources; `set`/`delete`/`clear`/`invalidate_tag` write (and raise
    CacheUnavailable when Redis fails); `cached` decorates a function. Close it (or use it as a context manager)
    to stop what it started: its share of the access-flush thread and its connections.
    """

    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None,
                 keyspaces: KeyspaceRegistry | None = None, http: httpx.Client | None = None) -> None:
        settings = settings or Settings.load()
        if redis_url is not None:
            settings = settings.model_copy(update={"redis_url": redis_url})
        self.settings = settings
        self._planner = Planner(settings, keyspaces)
        self.layout = self._planner.layout
        self._plans = self._planner.known
        self._breaker = Breaker(settings.redis_backoff)
        cluster = settings.redis_cluster
        self.redis = sync_client(settings.redis_url, timeout=settings.redis_timeout, cluster=cluster)
        self._blocking = sync_client(settings.redis_url, timeout=settings.wait_timeout + 1, cluster=cluster)
        limits = httpx.Limits(max_connections=100)
        self._http = http or httpx.Client(timeout=settings.source_timeout, limits=limits)
        self._flight: SingleFlight[Lookup] = SingleFlight()
        self._account = ReadAccounting(settings)
        # Keyspaces with `local = true` keep copies in this process (near/cache.py); None when none does.
        self._near = near_cache_for(settings, self._planner.keyspaces, self.layout)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Cache:
        return cls(settings=settings)

    @classmethod
    def from_url(cls, redis_url: str, **kwargs: Any) -> Cache:
        return cls(redis_url, **kwargs)

    @property
    def keyspaces(self) -> KeyspaceRegistry:
        return self._planner.keyspaces

    def flush_stats(self) -> bool:
        """Sends this process's buffered read counts to Redis now (they go every stats_flush_interval anyway)."""
        return self._account.flush()

    def close(self) -> None:
        """Stops what this client started: its share of the access-flush thread (the counts left are sent), its
        HTTP client (one it was handed too: that is the client's from then on) and its Redis connection pools.
        Closing twice is harmless."""
        self._account.close()
        self._http.close()
        self.redis.close()
        self._blocking.close()
        if self._near is not None:
            self._near.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reads ----------------------------------------------------------------------------------------------
    def get(self, key: str) -> Any:
        """The value of key, loaded from its source on a miss; None when the source has no such item."""
        plan = self._plans.get(key) or self._planner.require_plan(key)
        near = self._near
        if near is not None and (label := plan.label) in near.stores:  # local = true: the near cache first
            entry = near.serve(label, plan.value_key)
            if entry is not None:
                self._account.local_hit(plan, entry.fetched_ms)
                return entry.value
            return self._read_near(plan, self._fetch_source).value
        if self._breaker.until:  # Redis failed lately: _read handles the backoff and the probe
            return self._read(plan, self._fetch_source).value
        # The hit path (`_read` without a Lookup): it is what bench/read_path.py measures.
        try:
            raw = self.redis.execute_command("GET", plan.value_key)  # type: ignore[no-untyped-call]
        except REDIS_ERRORS:
            self._breaker.trip("read")
            return self._from_source(plan, self._fetch_source).value
        found = self._account.hit(plan, raw)
        if found is not None:
            return found[0]
        return self._flight.run(plan.key, lambda: self._load(plan, self._fetch_source, raw)).value

    def lookup(self, key: str) -> Lookup:
        """The value of key with whether it was a hit and its age (seconds since it was fetched)."""
        plan = self._plans.get(key) or self._planner.require_plan(key)
        near = self._near
        if near is not None and plan.label in near.stores:
            entry = near.serve(plan.label, plan.value_key)
            if entry is not None:
                return Lookup(entry.value, True, self._account.local_hit(plan, entry.fetched_ms))
            return self._read_near(plan, self._fetch_source)
        return self._read(plan, self._fetch_source)

    def _read_near(self, plan: Plan, fetch: Fetch) -> Lookup:
        """A read of a `local = true` keyspace that the near cache could not serve: the read from Redis, whose
        fresh value is kept if its key did not change meanwhile (the ticket says)."""
        assert self._near is not None
        ticket = self._near.ticket(plan.value_key)
        try:
            return self._read(plan, fetch, ticket)
        finally:
            self._near.release(plan.value_key)

    def near_figures(self) -> dict[str, dict[str, int]]:
        """The near cache's figures in this process, per keyspace (hits, misses, evictions, entries, bytes) and
        for its tracking link ("_link": resets, invalidations, healthy); empty without local keyspaces."""
        return self._near.figures() if self._near is not None else {}

    def _read(self, plan: Plan, fetch: Fetch, ticket: Ticket | None = None) -> Lookup:
        if self._breaker.open:
            return self._from_source(plan, fetch)
        try:
            raw = self.redis.execute_command("GET", plan.value_key)  # type: ignore[no-untyped-call]
        except REDIS_ERRORS:
            self._breaker.trip("read")
            return self._from_source(plan, fetch)
        self._breaker.reset()
        found = self._account.hit(plan, raw)
        if found is not None:
            if ticket is not None and self._near is not None:
                self._near.keep(plan.label, plan.value_key, ticket, found[0], fetched_ms=envelope.fetched_ms(raw),
                                expires_ms=envelope.expires_ms(raw), raw_size=len(raw))
            return Lookup(found[0], True, found[1])
        return self._flight.run(plan.key, lambda: self._load(plan, fetch, raw))

    def _from_source(self, plan: Plan, fetch: Fetch) -> Lookup:
        """A read that could not look in Redis: a miss, loaded once per process."""
        self._account.miss(plan)
        return self._flight.run(plan.key, lambda: self._load(plan, fetch, None))

    def _load(self, plan: Plan, fetch: Fetch, stale_raw: bytes | None) -> Lookup:
        """The miss: take the lease and load, or wait for the process that holds it, or (Redis failing, or the
        loader too slow) load without writing."""
        token = secrets.token_hex(8)
        deadline = time.monotonic() + self.settings.wait_timeout
        enlist = self._planner.enlist_calls(plan)
        if enlist and not self._breaker.open:  # a tagged key: enlisted before its fence token is read (keys.py)
            try:
                scripts.execute(self.redis, enlist)
            except REDIS_ERRORS:
                self._breaker.trip("acquire")
        while not self._breaker.open:
            try:
                result = scripts.run(self.redis, self._planner.acquire_call(plan, token))
            except REDIS_ERRORS:
                self._breaker.trip("acquire")
                break
            stale_raw = result.value or stale_raw
            if result.status is AcquireStatus.FRESH and result.value is not None:
                return loaded(result.value)
            if result.status is AcquireStatus.LOAD:
                return self._load_and_write(plan, fetch, token, result.fence, stale_raw)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break  # the loader is too slow: load ourselves, without writing
            wait = min(remaining, max(result.lease_pttl_ms, 10) / 1000 + 0.05)
            try:
                self._blocking.blpop([self.layout.wake(plan.key)], timeout=wait)
            except REDIS_ERRORS:
                self._breaker.trip("wait")
                break
        return self._direct(plan, fetch, stale_raw)

    def _load_and_write(
            self, plan: Plan, fetch: Fetch, token: str, fence: str, stale_raw: bytes | None) -> Lookup:
        try:
            fetched = fetch(plan)
            value_json = envelope.dumps(fetched.value) if fetched.found else None
        except BaseException as exc:
            try:
                scripts.run(self.redis, self._planner.release_call(plan, token))
            except REDIS_ERRORS:
                self._breaker.trip("release")
            if isinstance(exc, SourceError):
                return self._stale_or_raise(plan, stale_raw, exc)
            raise
        write = self._planner.write_call(plan, value_json, fence=fence, lease_token=token, version=fetched.version)
        try:
            if plan.tags:  # enlisted again beside the write (keys.py)
                scripts.execute(self.redis, [write, *self._planner.enlist_calls(plan)])
            else:
                scripts.run(self.redis, write)
        except REDIS_ERRORS:
            self._breaker.trip("write")
        return Lookup(fetched.value, False, 0.0)

    def _direct(self, plan: Plan, fetch: Fetch, stale_raw: bytes | None) -> Lookup:
        try:
            fetched = fetch(plan)
        except SourceError as exc:
            return self._stale_or_raise(plan, stale_raw, exc)
        return Lookup(fetched.value, False, 0.0)

    def _stale_or_raise(self, plan: Plan, stale_raw: bytes | None, error: SourceError) -> Lookup:
        """When the source fails: the expired value if it is still within max_stale, else the error."""
        if stale_raw is not None and plan.stale_ms > 0:
            return self._account.stale(plan, stale_raw)
        raise error

    def _fetch_source(self, plan: Plan) -> Fetched:
        assert plan.source is not None
        started = time.perf_counter()
        outcome: str = SourceOutcome.OK
        try:
            fetched = plan.source.fetch_sync(plan.params, self._http)
            if not fetched.found:
                outcome = SourceOutcome.NOT_FOUND
            return fetched
        except SourceError as exc:
            outcome = exc.kind
            raise
        finally:
            get_hooks().source_request(plan.label, time.perf_counter() - started, outcome)

    # ---- writes ---------------------------------------------------------------------------------------------
    def set(
            self, key: str, value: Any, ttl: float | None = None, tags: Iterable[str] = (), *,
            version: int | None = None) -> bool:
        """Stores a value (write-through). With `version`, an older version never replaces a newer one.

        Returns False when the cache already holds a newer version (nothing was written)."""
        write, *enlist = self._planner.set_calls(key, value, ttl, tags, version)
        self._forget(key)
        if enlist:  # a tagged key is enlisted before it is written, as a load is (keys.py): a round trip more
            self._pipelined(enlist, "set")
        return self._call(write, "set") is WriteStatus.WRITTEN

    def delete(self, key: str) -> bool:
        """Removes a key and fences any load of it in flight; True if a value was there."""
        self._forget(key)
        return self._call(self._planner.invalidate_call(key), "delete").deleted

    def exists(self, key: str) -> bool:
        """True when a fresh value (or a remembered "no such item") is cached."""
        check_key(key)
        with _unavailable("exists"):
            raw = self.redis.execute_command("GET", self.layout.value(key))  # type: ignore[no-untyped-call]
        return is_fresh(raw)

    def clear(self, prefix: str = "") -> int:
        """Invalidates every key starting with prefix (SCAN, never KEYS); returns how many there were."""
        count = 0
        batch: list[bytes] = []
        with _unavailable("clear"):
            for name in self.redis.scan_iter(match=self._planner.clear_match(prefix), count=1000):
                batch.append(name)
                if len(batch) >= CLEAR_BATCH:
                    count += self._invalidate_names(batch)
                    batch = []
            if batch:
                count += self._invalidate_names(batch)
        return count

    def _invalidate_names(self, names: list[bytes]) -> int:
        self._pipelined(self._planner.clear_calls(names), "clear")
        return len(names)

    def invalidate_tag(self, tag: str) -> int:
        """Invalidates every key carrying tag; loads in flight of such keys are fenced (keys.py: the walk, one
        round trip per step). Returns the values deleted."""
        cursor, members, total = "0", list[bytes](), 0
        while True:
            replies = self._pipelined(self._planner.tag_step_calls(tag, cursor, members), "invalidate_tag")
            total += sum(bool(reply.deleted) for reply in replies[:len(members)])
            if cursor == "0" and members:
                return total
            cursor, members = replies[-1]
            if cursor == "0" and not members:
                return total

    def _forget(self, key: str) -> None:
        # This process's own change: its local copy goes now, not when Redis's push arrives.
        if self._near is not None:
            self._near.forget(self.layout.value(key))

    def _call(self, call: scripts.Call[R], operation: str) -> R:
        with _unavailable(operation):
            return scripts.run(self.redis, call)

    def _pipelined(self, calls: list[scripts.Call[Any]], operation: str) -> list[Any]:
        """Sends calls in one pipeline; an error in any reply is raised as CacheUnavailable."""
        with _unavailable(operation):
            replies = scripts.execute(self.redis, calls)
            for reply in replies:
                if isinstance(reply, REDIS_ERRORS):
                    raise reply
        return replies

    # ---- decorator ------------------------------------------------------------------------------------------
    def cached(self, key: str | None = None, *, ttl: float, tags: Iterable[str] = ()) -> Callable[
            [Callable[..., Any]], Callable[..., Any]]:
        """Caches a function's JSON-serialisable result under `key` (a template over its arguments) or a hash
        of its arguments. The wrapped function gets `cache_clear()`. None results are not cached."""
        tag_tuple = tuple(tags)

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            label = check_function(fn, coroutine=False, client="Cache")

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                cache_key = check_key(function_key(fn, key, args, kwargs))
                plan = self._planner.function_plan(cache_key, label, ttl, tag_tuple)

                def load(_plan: Plan) -> Fetched:
                    return Fetched(fn(*args, **kwargs))

                return self._read(plan, load).value

            def cache_clear() -> int:
                return self.clear(clear_prefix(fn, key))

            wrapper.cache_clear = cache_clear  # type: ignore[attr-defined]
            return wrapper

        return decorate
