"""The read path: `Cache` (sync) and `AsyncCache` (async) over one shared core.

A hit is one GET; its accounting (hit/miss, served age, popularity) is buffered and flushed in batches (access.py).
A miss goes through an in-process single flight (one loader per key per process), then the cluster-wide lease
(lua/acquire.lua): one process loads from the source and writes with the fence token it took with the lease
(lua/write.lua); the others block on a wake-up list rather than poll. When Redis fails, readers go straight to the
source (still one load per key per process) and skip Redis for `redis_backoff` seconds, then try it again.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
import redis
import redis.asyncio

from . import envelope, script_calls, scripts
from .access import recorder_for
from .connections import async_client, sync_client
from .errors import CacheUnavailable, ConfigError, InvalidKey, SourceError, UnknownKeyspace
from .hooks import get_hooks
from .keys import KeyLayout
from .keyspaces import KeyspaceRegistry, check_key
from .script_calls import AcquireStatus, WriteStatus
from .settings import Settings
from .sources import Fetched, Source, build_source

T = TypeVar("T")
R = TypeVar("R")
TAG_BATCH = 500  # members invalidated per TAG_DRAIN call


@dataclass(frozen=True, slots=True)
class Lookup:
    """One read: the value, whether Redis had it fresh, and seconds since it was fetched from the source."""

    value: Any
    hit: bool
    age: float
    stale: bool = False


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything a read of one key needs, worked out once per key and memoised."""

    key: str
    label: str                       # the keyspace name (or the decorated function): the metric label
    value_key: str
    max_tracked: int
    ttl_ms: int
    stale_ms: int
    negative_ms: int
    tags: tuple[str, ...]
    source: Source | None
    params: Mapping[str, str]



def _raise_first(results: list[Any]) -> None:
    """Raises the first error of a pipeline's results (scripts.execute returns them in place)."""
    for result in results:
        if isinstance(result, Exception):
            raise result


def _escape_glob(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Breaker:
    """After a Redis failure the read path skips Redis for a short while, then tries again by itself.

    Once the backoff is over, one caller at a time probes Redis (the others keep skipping it until the probe
    succeeds, `reset`, or fails, `trip`): during an outage each backoff period costs one read a timeout, not
    every reader one each.
    """

    __slots__ = ("_lock", "backoff", "until")

    def __init__(self, backoff: float) -> None:
        self.backoff = backoff
        self.until = 0.0
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        """True while Redis is to be skipped; False for a caller that may use it (perhaps as the probe)."""
        until = self.until
        if until == 0.0:
            return False
        now = time.monotonic()
        if now < until:
            return True
        with self._lock:
            if self.until != until:  # another caller took the probe, or the probe already succeeded
                return self.until != 0.0 and now < self.until
            self.until = now + self.backoff
        return False

    def trip(self, operation: str) -> None:
        self.until = time.monotonic() + self.backoff
        get_hooks().redis_error(operation)

    def reset(self) -> None:
        self.until = 0.0


class _Core:
    """What both clients share: settings, keyspaces, key layout, per-key plans and value encoding."""

    _PLAN_LIMIT = 65536

    def __init__(self, settings: Settings, keyspaces: KeyspaceRegistry | None) -> None:
        self.settings = settings
        self.keyspaces = keyspaces if keyspaces is not None else settings.keyspaces
        self.layout = KeyLayout(settings.key_prefix)
        self._plans: dict[str, _Plan | None] = {}
        self.breaker = _Breaker(settings.redis_backoff)
        self.recorder = recorder_for(settings.redis_url, settings.key_prefix, half_life=settings.hot_half_life,
                                     interval=settings.stats_flush_interval, timeout=settings.redis_timeout)

    def hit_or_none(self, plan: _Plan, raw: bytes | None) -> Lookup | None:
        """Accounts for one read's first look in Redis; the Lookup when it was a fresh hit."""
        now = time.time()
        if raw is not None and int(raw[:13]) > now * 1000:
            value, fetched_ms = envelope.value_and_fetched(raw)
            age = max(0.0, now - fetched_ms / 1000)
            self.recorder.record(plan.label, plan.key, plan.max_tracked, True, age)
            return Lookup(value, True, age)
        self.recorder.record(plan.label, plan.key, plan.max_tracked, False, 0.0)
        return None

    def missed(self, plan: _Plan) -> None:
        """Accounts for a read that could not look in Redis: a miss all the same (the source serves it)."""
        self.recorder.record(plan.label, plan.key, plan.max_tracked, False, 0.0)

    def plan(self, key: str) -> _Plan | None:
        """The plan of a key of some keyspace; None for a key no keyspace matches."""
        try:
            return self._plans[key]
        except KeyError:
            pass
        found = self.keyspaces.find(key)
        plan = None
        if found is not None:
            ks, params = found
            cfg = ks.config
            neg = cfg.negative_ttl if cfg.negative_ttl is not None else self.settings.negative_ttl
            plan = self._make_plan(key, ks.name, ttl=cfg.ttl, max_stale=cfg.max_stale, negative_ttl=neg,
                                   tags=ks.tags_for(params), max_tracked=cfg.max_tracked,
                                   source=build_source(ks, default_timeout=self.settings.source_timeout),
                                   params=params)
        if len(self._plans) >= self._PLAN_LIMIT:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def _make_plan(self, key: str, label: str, *, ttl: float, max_stale: float, negative_ttl: float,
                   tags: tuple[str, ...], max_tracked: int | None, source: Source | None,
                   params: Mapping[str, str]) -> _Plan:
        return _Plan(key, label, self.layout.value(key), max_tracked or self.settings.max_tracked_keys,
                     int(ttl * 1000), int(max_stale * 1000), int(negative_ttl * 1000), tags, source, params)

    def function_plan(self, key: str, label: str, ttl: float, tags: tuple[str, ...]) -> _Plan:
        return self._make_plan(key, label, ttl=ttl, max_stale=0, negative_ttl=0, tags=tags, max_tracked=None,
                               source=None, params={})

    def require_plan(self, key: str) -> _Plan:
        plan = self.plan(check_key(key))
        if plan is None:
            raise UnknownKeyspace(f"no keyspace pattern matches key {key[:200]!r}: cannot read it through")
        return plan

    @staticmethod
    def from_raw(raw: bytes, *, hit: bool, stale: bool = False) -> Lookup:
        entry = envelope.decode(raw)
        age = max(0.0, (_now_ms() - entry.fetched_ms) / 1000)
        return Lookup(entry.value if entry.found else None, hit, age, stale)

    def write_call(self, plan: _Plan, value_json: str | None, *, fence: str,
                   lease_token: str, version: int | None, ttl_ms: int | None = None,
                   bump: bool = False) -> scripts.Call[script_calls.WriteStatus]:
        """The WRITE of a value (value_json) or of a remembered "no such item"."""
        now = _now_ms()
        if value_json is None:
            ttl = plan.negative_ms
            px = ttl
        else:
            ttl = ttl_ms if ttl_ms is not None else plan.ttl_ms
            px = ttl + plan.stale_ms
        raw = envelope.encode(value_json, fetched_ms=now, ttl_ms=ttl, version=version)
        return script_calls.write(self.layout, key=plan.key, tags=plan.tags, envelope=raw, px=px, fence=fence,
                                  lease_token=lease_token, version=version, fence_ttl=self.settings.fence_ttl,
                                  bump=bump)

    def acquire_call(self, plan: _Plan, token: str) -> scripts.Call[script_calls.Acquired]:
        return script_calls.acquire(self.layout, key=plan.key, tags=plan.tags, token=token,
                                    lease_ms=self.settings.lease_ms)

    def invalidate_call(self, key: str) -> scripts.Call[script_calls.Invalidated]:
        return script_calls.invalidate_key(self.layout, key=key, version=None, fence_ttl=self.settings.fence_ttl)

    def invalidate_calls(self, names: list[bytes], skip: int) -> list[scripts.Call[script_calls.Invalidated]]:
        """The invalidation of each SCANned value name (the cache key is the name past `skip` characters)."""
        return [self.invalidate_call(name.decode("utf-8", "surrogateescape")[skip:]) for name in names]

    def tag_bump_call(self, tag: str) -> scripts.Call[script_calls.TagBatch]:
        return script_calls.tag_bump(self.layout, tag=tag, fence_ttl=self.settings.fence_ttl, batch=TAG_BATCH)

    def tag_drain_call(self, tag: str, members: list[bytes]) -> scripts.Call[script_calls.TagBatch]:
        return script_calls.tag_drain(self.layout, tag=tag, members=members, fence_ttl=self.settings.fence_ttl,
                                      batch=TAG_BATCH)

    def tag_plan(self, key: str, ttl: float | None, tags: Iterable[str]) -> tuple[_Plan, int]:
        """The plan for a writer's `set`: the keyspace's, or a bare one when the key has none."""
        check_key(key)
        plan = self.plan(key)
        extra = tuple(tags)
        if plan is None:
            if ttl is None:
                raise UnknownKeyspace(f"no keyspace matches key {key[:200]!r}; give set() a ttl")
            plan = self._make_plan(key, "_none", ttl=ttl, max_stale=0, negative_ttl=0, tags=extra,
                                   max_tracked=None, source=None, params={})
        elif extra:
            plan = _Plan(plan.key, plan.label, plan.value_key, plan.max_tracked, plan.ttl_ms, plan.stale_ms,
                         plan.negative_ms, tuple(dict.fromkeys(plan.tags + extra)), plan.source, plan.params)
        ttl_ms = int(ttl * 1000) if ttl is not None else plan.ttl_ms
        if ttl_ms <= 0:
            raise ValueError("ttl must be positive")
        return plan, ttl_ms


def _check_value(value: Any) -> str:
    if value is None:
        raise ValueError("None cannot be stored: it means 'no such item'; use delete()")
    return envelope.dumps(value)


def _function_key(fn: Callable[..., Any], template: str | None, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> str:
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    if template is not None:
        return template.format(**bound.arguments)
    digest = hashlib.sha1(envelope.dumps([list(bound.args), bound.kwargs]).encode()).hexdigest()[:24]
    return f"{_function_prefix(fn)}{digest}"


def _function_prefix(fn: Callable[..., Any]) -> str:
    return f"fn:{fn.__module__}.{fn.__qualname__}:"


def _clear_prefix(fn: Callable[..., Any], template: str | None) -> str:
    if template is None:
        return _function_prefix(fn)
    return template.split("{", 1)[0]


class _SingleFlight(Generic[T]):
    """One call per key at a time in this process; the others get its result."""

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


class _AsyncSingleFlight(Generic[T]):
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


class Cache:
    """Synchronous read-through cache client; safe to share between threads."""

    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None,
                 keyspaces: KeyspaceRegistry | None = None, http: httpx.Client | None = None) -> None:
        settings = settings or Settings.load()
        if redis_url is not None:
            settings = settings.model_copy(update={"redis_url": redis_url})
        self._core = _Core(settings, keyspaces)
        self.settings = settings
        self.layout = self._core.layout
        self.redis = sync_client(settings.redis_url, timeout=settings.redis_timeout)
        self._blocking = sync_client(settings.redis_url, timeout=settings.wait_timeout + 1)
        self._http = http or httpx.Client(timeout=settings.source_timeout,
                                          limits=httpx.Limits(max_connections=100))
        self._flight: _SingleFlight[Lookup] = _SingleFlight()

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Cache:
        return cls(settings=settings)

    @classmethod
    def from_url(cls, redis_url: str, **kwargs: Any) -> Cache:
        return cls(redis_url, **kwargs)

    @property
    def keyspaces(self) -> KeyspaceRegistry:
        return self._core.keyspaces

    def flush_stats(self) -> bool:
        """Sends this process's buffered read counts to Redis now (they go every stats_flush_interval anyway)."""
        return self._core.recorder.flush()

    def close(self) -> None:
        self._core.recorder.flush()
        self._http.close()
        self.redis.close()
        self._blocking.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reads ----------------------------------------------------------------------------------------------
    def get(self, key: str) -> Any:
        """The value of key, loaded from its source on a miss; None when the source has no such item."""
        core = self._core
        plan = core._plans.get(key)
        if plan is None:
            plan = core.require_plan(key)
        if core.breaker.until:  # Redis failed lately: the full path handles the backoff and the probe
            return self._read(plan, self._fetch_source).value
        # The hit path, inlined (`_read` and `hit_or_none` without a Lookup): it is what the 1.10x goal measures.
        try:
            raw = self.redis.execute_command("GET", plan.value_key)  # type: ignore[no-untyped-call]
        except redis.RedisError:
            core.breaker.trip("read")
            core.missed(plan)
            return self._flight.run(plan.key, lambda: self._load(plan, self._fetch_source, None)).value
        now = time.time()
        if raw is not None and int(raw[:13]) > now * 1000:
            value, fetched_ms = envelope.value_and_fetched(raw)
            core.recorder.record(plan.label, plan.key, plan.max_tracked, True, max(0.0, now - fetched_ms / 1000))
            return value
        core.recorder.record(plan.label, plan.key, plan.max_tracked, False, 0.0)
        return self._flight.run(plan.key, lambda: self._load(plan, self._fetch_source, raw)).value

    def lookup(self, key: str) -> Lookup:
        plan = self._core._plans.get(key)
        if plan is None:
            plan = self._core.require_plan(key)
        return self._read(plan, self._fetch_source)

    def _read(self, plan: _Plan, fetch: Callable[[_Plan], Fetched]) -> Lookup:
        core = self._core
        stale_raw: bytes | None = None
        if core.breaker.open:
            core.missed(plan)
        else:
            try:
                raw = self.redis.execute_command("GET", plan.value_key)  # type: ignore[no-untyped-call]
            except redis.RedisError:
                core.breaker.trip("read")
                core.missed(plan)
            else:
                if core.breaker.until:
                    core.breaker.reset()
                hit = core.hit_or_none(plan, raw)
                if hit is not None:
                    return hit
                stale_raw = raw
        return self._flight.run(plan.key, lambda: self._load(plan, fetch, stale_raw))

    def _load(self, plan: _Plan, fetch: Callable[[_Plan], Fetched], stale_raw: bytes | None) -> Lookup:
        core = self._core
        token = secrets.token_hex(8)
        deadline = time.monotonic() + core.settings.wait_timeout
        while not core.breaker.open:
            try:
                result = scripts.run(self.redis, core.acquire_call(plan, token))
            except redis.RedisError:
                core.breaker.trip("acquire")
                break
            stale_raw = result.value or stale_raw
            if result.status is AcquireStatus.FRESH and result.value is not None:
                return core.from_raw(result.value, hit=False)
            if result.status is AcquireStatus.LOAD:
                return self._load_and_write(plan, fetch, token, result.fence, stale_raw)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break  # the loader is too slow: load ourselves, without writing
            wait = min(remaining, max(result.lease_pttl_ms, 10) / 1000 + 0.05)
            try:
                self._blocking.blpop([core.layout.wake(plan.key)], timeout=wait)
            except redis.RedisError:
                core.breaker.trip("wait")
                break
        return self._direct(plan, fetch, stale_raw)

    def _load_and_write(self, plan: _Plan, fetch: Callable[[_Plan], Fetched], token: str, fence: str,
                        stale_raw: bytes | None) -> Lookup:
        core = self._core
        try:
            fetched = fetch(plan)
            value_json = envelope.dumps(fetched.value) if fetched.found else None
        except BaseException as exc:
            try:
                scripts.run(self.redis, script_calls.release(core.layout, key=plan.key, lease_token=token))
            except redis.RedisError:
                core.breaker.trip("release")
            if isinstance(exc, SourceError):
                return self._stale_or_raise(plan, stale_raw, exc)
            raise
        write = core.write_call(plan, value_json, fence=fence, lease_token=token, version=fetched.version)
        try:
            scripts.run(self.redis, write)
        except redis.RedisError:
            core.breaker.trip("write")
        return Lookup(fetched.value, False, 0.0)

    def _direct(self, plan: _Plan, fetch: Callable[[_Plan], Fetched], stale_raw: bytes | None) -> Lookup:
        try:
            fetched = fetch(plan)
        except SourceError as exc:
            return self._stale_or_raise(plan, stale_raw, exc)
        return Lookup(fetched.value, False, 0.0)

    def _stale_or_raise(self, plan: _Plan, stale_raw: bytes | None, error: SourceError) -> Lookup:
        """When the source fails: the expired value if it is still within max_stale, else the error."""
        if stale_raw is not None and plan.stale_ms > 0:
            get_hooks().stale_served(plan.label)
            self._core.recorder.count("stale:" + plan.label)
            return self._core.from_raw(stale_raw, hit=False, stale=True)
        raise error

    def _fetch_source(self, plan: _Plan) -> Fetched:
        assert plan.source is not None
        started = time.perf_counter()
        outcome = "ok"
        try:
            fetched = plan.source.fetch_sync(plan.params, self._http)
            if not fetched.found:
                outcome = "not_found"
            return fetched
        except SourceError as exc:
            outcome = exc.kind
            raise
        finally:
            get_hooks().source_request(plan.label, time.perf_counter() - started, outcome)

    # ---- writes ---------------------------------------------------------------------------------------------
    def set(self, key: str, value: Any, ttl: float | None = None, tags: Iterable[str] = (), *,
            version: int | None = None) -> bool:
        """Stores a value (write-through). With `version`, an older version never replaces a newer one.

        Returns False when the cache already holds a newer version (nothing was written)."""
        plan, ttl_ms = self._core.tag_plan(key, ttl, tags)
        value_json = _check_value(value)
        write = self._core.write_call(plan, value_json, fence="*", lease_token="", version=version, ttl_ms=ttl_ms,
                                      bump=True)
        return self._call(write) is WriteStatus.WRITTEN

    def delete(self, key: str) -> bool:
        """Removes a key and fences any load of it in flight; True if a value was there."""
        check_key(key)
        return self._call(self._core.invalidate_call(key)).deleted

    def exists(self, key: str) -> bool:
        """True when a fresh value (or a remembered "no such item") is cached."""
        check_key(key)
        raw = self._call_plain(lambda: self.redis.get(self.layout.value(key)))
        return raw is not None and int(raw[:13]) > _now_ms()

    def clear(self, prefix: str = "") -> int:
        """Invalidates every key starting with prefix (SCAN, never KEYS); returns how many there were."""
        match = self.layout.value_prefix + _escape_glob(prefix) + "*"
        skip = len(self.layout.value_prefix)
        count = 0
        try:
            for batch in _batched(self.redis.scan_iter(match=match, count=1000), 500):
                self._invalidate_raw(batch, skip)
                count += len(batch)
        except redis.RedisError as exc:
            raise CacheUnavailable(f"redis failed during clear: {type(exc).__name__}") from None
        return count

    def _invalidate_raw(self, batch: list[bytes], skip: int) -> None:
        _raise_first(scripts.execute(self.redis, self._core.invalidate_calls(batch, skip)))

    def invalidate_tag(self, tag: str) -> int:
        """Invalidates every key carrying tag; loads in flight of such keys are fenced. Returns keys dropped."""
        check_key(tag)
        step = self._call(self._core.tag_bump_call(tag))
        total = 0
        while step.members:
            step = self._call(self._core.tag_drain_call(tag, step.members))
            total += step.dropped
        return total

    def _call(self, call: scripts.Call[R]) -> R:
        return self._call_plain(lambda: scripts.run(self.redis, call))

    def _call_plain(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except redis.RedisError as exc:
            raise CacheUnavailable(f"redis is unavailable: {type(exc).__name__}") from None

    # ---- decorator ------------------------------------------------------------------------------------------
    def cached(self, key: str | None = None, *, ttl: float, tags: Iterable[str] = ()) -> Callable[
            [Callable[..., Any]], Callable[..., Any]]:
        """Caches a function's JSON-serialisable result under `key` (a template over its arguments) or a hash
        of its arguments. The wrapped function gets `cache_clear()`. None results are not cached."""
        tag_tuple = tuple(tags)

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            label = f"fn:{fn.__qualname__}"

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                cache_key = check_key(_function_key(fn, key, args, kwargs))
                plan = self._core.function_plan(cache_key, label, ttl, tag_tuple)
                return self._read(plan, lambda _plan: Fetched(fn(*args, **kwargs))).value

            wrapper.cache_clear = lambda: self.clear(_clear_prefix(fn, key))  # type: ignore[attr-defined]
            return wrapper

        return decorate


class AsyncCache:
    """Asynchronous read-through cache client for one event loop."""

    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None,
                 keyspaces: KeyspaceRegistry | None = None, http: httpx.AsyncClient | None = None) -> None:
        settings = settings or Settings.load()
        if redis_url is not None:
            settings = settings.model_copy(update={"redis_url": redis_url})
        self._core = _Core(settings, keyspaces)
        self.settings = settings
        self.layout = self._core.layout
        self.redis = async_client(settings.redis_url, timeout=settings.redis_timeout)
        self._blocking = async_client(settings.redis_url, timeout=settings.wait_timeout + 1)
        self._http = http or httpx.AsyncClient(timeout=settings.source_timeout,
                                               limits=httpx.Limits(max_connections=100))
        self._flight: _AsyncSingleFlight[Lookup] = _AsyncSingleFlight()

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> AsyncCache:
        return cls(settings=settings)

    @classmethod
    def from_url(cls, redis_url: str, **kwargs: Any) -> AsyncCache:
        return cls(redis_url, **kwargs)

    @property
    def keyspaces(self) -> KeyspaceRegistry:
        return self._core.keyspaces

    async def flush_stats(self) -> bool:
        return await asyncio.to_thread(self._core.recorder.flush)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._core.recorder.flush)
        await self._http.aclose()
        await self.redis.aclose()
        await self._blocking.aclose()

    async def __aenter__(self) -> AsyncCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def get(self, key: str) -> Any:
        """The value of key, loaded from its source on a miss; None when the source has no such item."""
        core = self._core
        plan = core._plans.get(key)
        if plan is None:
            plan = core.require_plan(key)
        if core.breaker.until:  # Redis failed lately: the full path handles the backoff and the probe
            return (await self._read(plan, self._fetch_source)).value
        # The hit path, inlined as in Cache.get.
        try:
            raw = await self.redis.execute_command("GET", plan.value_key)  # type: ignore[no-untyped-call]
        except redis.RedisError:
            core.breaker.trip("read")
            core.missed(plan)
            return (await self._flight.run(plan.key, lambda: self._load(plan, self._fetch_source, None))).value
        now = time.time()
        if raw is not None and int(raw[:13]) > now * 1000:
            value, fetched_ms = envelope.value_and_fetched(raw)
            core.recorder.record(plan.label, plan.key, plan.max_tracked, True, max(0.0, now - fetched_ms / 1000))
            return value
        core.recorder.record(plan.label, plan.key, plan.max_tracked, False, 0.0)
        return (await self._flight.run(plan.key, lambda: self._load(plan, self._fetch_source, raw))).value

    async def lookup(self, key: str) -> Lookup:
        plan = self._core._plans.get(key)
        if plan is None:
            plan = self._core.require_plan(key)
        return await self._read(plan, self._fetch_source)

    async def _read(self, plan: _Plan, fetch: Callable[[_Plan], Awaitable[Fetched]]) -> Lookup:
        core = self._core
        stale_raw: bytes | None = None
        if core.breaker.open:
            core.missed(plan)
        else:
            try:
                raw = await self.redis.execute_command("GET", plan.value_key)  # type: ignore[no-untyped-call]
            except redis.RedisError:
                core.breaker.trip("read")
                core.missed(plan)
            else:
                if core.breaker.until:
                    core.breaker.reset()
                hit = core.hit_or_none(plan, raw)
                if hit is not None:
                    return hit
                stale_raw = raw
        return await self._flight.run(plan.key, lambda: self._load(plan, fetch, stale_raw))

    async def _load(self, plan: _Plan, fetch: Callable[[_Plan], Awaitable[Fetched]],
                    stale_raw: bytes | None) -> Lookup:
        core = self._core
        token = secrets.token_hex(8)
        deadline = time.monotonic() + core.settings.wait_timeout
        while not core.breaker.open:
            try:
                result = await scripts.arun(self.redis, core.acquire_call(plan, token))
            except redis.RedisError:
                core.breaker.trip("acquire")
                break
            stale_raw = result.value or stale_raw
            if result.status is AcquireStatus.FRESH and result.value is not None:
                return core.from_raw(result.value, hit=False)
            if result.status is AcquireStatus.LOAD:
                return await self._load_and_write(plan, fetch, token, result.fence, stale_raw)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wait = min(remaining, max(result.lease_pttl_ms, 10) / 1000 + 0.05)
            try:
                await self._blocking.blpop([core.layout.wake(plan.key)], timeout=wait)
            except redis.RedisError:
                core.breaker.trip("wait")
                break
        return await self._direct(plan, fetch, stale_raw)

    async def _load_and_write(self, plan: _Plan, fetch: Callable[[_Plan], Awaitable[Fetched]], token: str,
                              fence: str, stale_raw: bytes | None) -> Lookup:
        core = self._core
        try:
            fetched = await fetch(plan)
            value_json = envelope.dumps(fetched.value) if fetched.found else None
        except BaseException as exc:
            try:
                await scripts.arun(self.redis, script_calls.release(core.layout, key=plan.key, lease_token=token))
            except redis.RedisError:
                core.breaker.trip("release")
            if isinstance(exc, SourceError):
                return await self._stale_or_raise(plan, stale_raw, exc)
            raise
        write = core.write_call(plan, value_json, fence=fence, lease_token=token, version=fetched.version)
        try:
            await scripts.arun(self.redis, write)
        except redis.RedisError:
            core.breaker.trip("write")
        return Lookup(fetched.value, False, 0.0)

    async def _direct(self, plan: _Plan, fetch: Callable[[_Plan], Awaitable[Fetched]],
                      stale_raw: bytes | None) -> Lookup:
        try:
            fetched = await fetch(plan)
        except SourceError as exc:
            return await self._stale_or_raise(plan, stale_raw, exc)
        return Lookup(fetched.value, False, 0.0)

    async def _stale_or_raise(self, plan: _Plan, stale_raw: bytes | None, error: SourceError) -> Lookup:
        if stale_raw is not None and plan.stale_ms > 0:
            get_hooks().stale_served(plan.label)
            self._core.recorder.count("stale:" + plan.label)
            return self._core.from_raw(stale_raw, hit=False, stale=True)
        raise error

    async def _fetch_source(self, plan: _Plan) -> Fetched:
        assert plan.source is not None
        started = time.perf_counter()
        outcome = "ok"
        try:
            fetched = await plan.source.fetch(plan.params, self._http)
            if not fetched.found:
                outcome = "not_found"
            return fetched
        except SourceError as exc:
            outcome = exc.kind
            raise
        finally:
            get_hooks().source_request(plan.label, time.perf_counter() - started, outcome)

    async def set(self, key: str, value: Any, ttl: float | None = None, tags: Iterable[str] = (), *,
                  version: int | None = None) -> bool:
        plan, ttl_ms = self._core.tag_plan(key, ttl, tags)
        value_json = _check_value(value)
        write = self._core.write_call(plan, value_json, fence="*", lease_token="", version=version, ttl_ms=ttl_ms,
                                      bump=True)
        return await self._call(write) is WriteStatus.WRITTEN

    async def delete(self, key: str) -> bool:
        check_key(key)
        return (await self._call(self._core.invalidate_call(key))).deleted

    async def exists(self, key: str) -> bool:
        check_key(key)
        try:
            raw = await self.redis.get(self.layout.value(key))
        except redis.RedisError as exc:
            raise CacheUnavailable(f"redis is unavailable: {type(exc).__name__}") from None
        return raw is not None and int(raw[:13]) > _now_ms()

    async def clear(self, prefix: str = "") -> int:
        match = self.layout.value_prefix + _escape_glob(prefix) + "*"
        skip = len(self.layout.value_prefix)
        count = 0
        try:
            batch: list[bytes] = []
            async for raw_key in self.redis.scan_iter(match=match, count=1000):
                batch.append(raw_key)
                if len(batch) >= 500:
                    count += await self._invalidate_raw(batch, skip)
                    batch = []
            if batch:
                count += await self._invalidate_raw(batch, skip)
        except redis.RedisError as exc:
            raise CacheUnavailable(f"redis failed during clear: {type(exc).__name__}") from None
        return count

    async def _invalidate_raw(self, batch: list[bytes], skip: int) -> int:
        _raise_first(await scripts.aexecute(self.redis, self._core.invalidate_calls(batch, skip)))
        return len(batch)

    async def invalidate_tag(self, tag: str) -> int:
        check_key(tag)
        step = await self._call(self._core.tag_bump_call(tag))
        total = 0
        while step.members:
            step = await self._call(self._core.tag_drain_call(tag, step.members))
            total += step.dropped
        return total

    async def _call(self, call: scripts.Call[R]) -> R:
        try:
            return await scripts.arun(self.redis, call)
        except redis.RedisError as exc:
            raise CacheUnavailable(f"redis is unavailable: {type(exc).__name__}") from None

    def cached(self, key: str | None = None, *, ttl: float, tags: Iterable[str] = ()) -> Callable[
            [Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        """The async twin of Cache.cached, for coroutine functions."""
        tag_tuple = tuple(tags)

        def decorate(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            if not inspect.iscoroutinefunction(fn):
                raise ConfigError(f"AsyncCache.cached needs a coroutine function, not {fn.__qualname__}")
            label = f"fn:{fn.__qualname__}"

            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                cache_key = check_key(_function_key(fn, key, args, kwargs))
                plan = self._core.function_plan(cache_key, label, ttl, tag_tuple)

                async def load(_plan: _Plan) -> Fetched:
                    return Fetched(await fn(*args, **kwargs))

                return (await self._read(plan, load)).value

            async def cache_clear() -> int:
                return await self.clear(_clear_prefix(fn, key))

            wrapper.cache_clear = cache_clear  # type: ignore[attr-defined]
            return wrapper

        return decorate


def _batched(iterable: Iterable[T], size: int) -> Iterable[list[T]]:
    batch: list[T] = []
    for item in iterable:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


__all__ = ["AsyncCache", "Cache", "InvalidKey", "Lookup"]
