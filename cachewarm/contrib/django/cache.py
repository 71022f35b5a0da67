"""A ``CACHES`` backend: keyspace keys read through cachewarm, every other key as Django's own Redis cache.

    CACHES = {"cachewarm": {"BACKEND": "cachewarm.contrib.django.cache.CachewarmCache",
                            "LOCATION": "redis://127.0.0.1:6379/0",      # optional: CACHEWARM["REDIS_URL"]
                            "OPTIONS": {"CONFIG": "cachewarm.toml"}}}     # optional: any cachewarm setting

A key some keyspace pattern matches (``product:42``) is cachewarm's: `get` is `Cache.get` (a miss loads it through
the keyspace's source, single flight, fenced), `set`/`add` store JSON with the keyspace's TTL (a Django timeout
of ``None`` or the default means that TTL; a positive one replaces it; zero or less deletes), `delete` also fences
loads in flight, `has_key` is `exists`. Such keys are used as they are: Django's ``KEY_PREFIX``, ``VERSION`` and
``KEY_FUNCTION`` do not apply to them (workers, other processes and other languages know them by that name), and
`incr`, `decr`, `touch` and `incr_version` raise ValueError for them (their values and TTLs come from the keyspace).
`add` is `exists` then `set`: not atomic against a concurrent writer of the same key.

Every other key is Django's, with Django's semantics: its ``KEY_PREFIX``/``VERSION``/``KEY_FUNCTION``, pickled
values (integers raw, so `incr` is INCRBY), stored under ``<CACHEWARM_KEY_PREFIX>django:`` in the same Redis
(an ACL user limited to cachewarm's keys can use them). `clear` removes those keys only (SCAN + UNLINK, never
FLUSHDB: the invalidation stream and the fences live in that database); keyspace values are cleared with
cachewarm's own `clear` / `invalidate_tag`.

The async twins (`aget`, ...) are native: `AsyncCache` (one per event loop) and the asyncio Redis client, not
Django's thread hop. Each operation is written once, as a generator of I/O requests that a sync and an async
driver run, so that the twins cannot drift. Clients are shared by every backend instance of the process with the
same settings (Django makes one instance per thread).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.cache.backends.redis import RedisSerializer

from ...config.keyspaces import KeyspaceRegistry
from ...errors import InvalidKey
from ...settings import Settings
from .cache_io import (
    Call,
    Commands,
    Op,
    Scan,
    arun_request,
    canonical,
    canonical_loop_cache,
    canonical_shared_cache,
    run_request,
)
from .conf import cachewarm_settings, settings_values

ROUTES_KEPT = 10_000  # keys whose route (keyspace or Django's) a backend instance remembers
SCAN_BATCH = 500  # keys per UNLINK pipeline of clear()
# incr: Django's contract is "ValueError when the key does not exist"; one script so that it cannot create it.
INCR_EXISTING = ("local v = redis.call('EXISTS', KEYS[1]) if v == 0 then return false end "
                 "return redis.call('INCRBY', KEYS[1], ARGV[1])")


class CachewarmCache(BaseCache):  # type: ignore[misc]
    """Django's cache API over cachewarm (see the module's docstring)."""

    def __init__(self, location: str | None, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        overrides = settings_values(params.get("OPTIONS"), "CACHES OPTIONS")
        if location:
            overrides["redis_url"] = location
        self._overrides = tuple(sorted(overrides.items()))
        self._serializer = RedisSerializer()
        self._base: Settings | None = None
        self._resolved: tuple[Settings, KeyspaceRegistry]
        self._routes: tuple[KeyspaceRegistry | None, dict[str, bool]] = (None, {})

    # ---- settings, routing, keys ---------------------------------------------------------------------------------
    def _resolve(self) -> tuple[Settings, KeyspaceRegistry]:
        """This backend's settings and keyspaces, worked out again only when Django's settings changed."""
        base = cachewarm_settings()
        if self._base is not base:
            settings = canonical(_settings_for(base, self._overrides))
            self._resolved = (settings, settings.load_keyspaces())
            self._base = base
        return self._resolved

    @property
    def settings(self) -> Settings:
        return self._resolve()[0]

    @property
    def keyspaces(self) -> KeyspaceRegistry:
        return self._resolve()[1]

    def is_keyspace_key(self, key: Any) -> bool:
        """True when a keyspace pattern matches `key` as it is (then cachewarm owns it). Remembered per backend
        instance for up to ROUTES_KEPT keys (then forgotten all at once), since a regex per keyspace per call
        would be most of what the backend adds to a hit."""
        registry = self.keyspaces
        routes = self._routes
        if routes[0] is not registry or len(routes[1]) >= ROUTES_KEPT:
            routes = self._routes = (registry, {})
        known = routes[1].get(key) if isinstance(key, str) else False
        if known is None:
            try:
                known = registry.find(key) is not None
            except InvalidKey:  # too long, control characters: never a keyspace key, a fine Django key
                known = False
            routes[1][key] = known
        return known

    def django_key(self, key: Any, version: int | None = None) -> str:
        """The Redis name of a key of Django's: Django's key function under cachewarm's prefix."""
        return f"{self.settings.key_prefix}django:{self.make_and_validate_key(key, version=version)}"

    def _ttl(self, timeout: Any) -> int | None:
        """Django's timeout for its own keys: None keeps forever, 0 or less removes."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        return None if timeout is None else max(0, int(timeout))

    def _keyspace_ttl(self, timeout: Any) -> float | None:
        """Django's timeout for a keyspace key: the default and None mean the keyspace's TTL (None to `set`)."""
        if timeout is DEFAULT_TIMEOUT or timeout is None:
            return None
        return max(0.0, float(timeout))

    def _refuse(self, operation: str, key: str) -> ValueError:
        return ValueError(f"{operation} does not apply to keyspace key {key[:100]!r}: its value and TTL come from "
                          "its keyspace (use another key, or cachewarm's own API)")

    # ---- operations, written once (generators of requests) ---------------------------------------------------
    def _get(self, key: Any, default: Any, version: int | None) -> Op:
        if self.is_keyspace_key(key):
            value = yield Call("get", (key,))
            return default if value is None else value  # None: the source has no such item
        (raw,) = yield Commands((("GET", self.django_key(key, version)),))
        return default if raw is None else self._serializer.loads(raw)  # a stored None is None, as in Django

    def _set(self, key: Any, value: Any, timeout: Any, version: int | None, *, only_new: bool = False) -> Op:
        if self.is_keyspace_key(key):
            if only_new and (yield Call("exists", (key,))):
                return False
            ttl = self._keyspace_ttl(timeout)
            if ttl == 0:
                yield Call("delete", (key,))
                return only_new
            return bool((yield Call("set", (key, value, ttl))))
        name, ttl_s, data = self.django_key(key, version), self._ttl(timeout), self._serializer.dumps(value)
        if ttl_s == 0:
            if only_new:
                (existed,) = yield Commands((("EXISTS", name),))
                return not existed
            yield Commands((("DEL", name),))
            return True
        flags: tuple[Any, ...] = (("EX", ttl_s) if ttl_s is not None else ()) + (("NX",) if only_new else ())
        (reply,) = yield Commands((("SET", name, data, *flags),))
        return bool(reply)

    def _delete(self, key: Any, version: int | None) -> Op:
        if self.is_keyspace_key(key):
            return bool((yield Call("delete", (key,))))
        (count,) = yield Commands((("DEL", self.django_key(key, version)),))
        return bool(count)

    def _has_key(self, key: Any, version: int | None) -> Op:
        if self.is_keyspace_key(key):
            return bool((yield Call("exists", (key,))))
        (count,) = yield Commands((("EXISTS", self.django_key(key, version)),))
        return bool(count)

    def _touch(self, key: Any, timeout: Any, version: int | None) -> Op:
        if self.is_keyspace_key(key):
            raise self._refuse("touch", key)
        name, ttl = self.django_key(key, version), self._ttl(timeout)
        (reply,) = yield Commands((("PERSIST", name) if ttl is None else ("EXPIRE", name, ttl),))
        if ttl is None:  # PERSIST answers 0 for a key without expiry too: it was touched if it exists
            (reply,) = yield Commands((("EXISTS", name),))
        return bool(reply)

    def _incr(self, key: Any, delta: int, version: int | None) -> Op:
        if self.is_keyspace_key(key):
            raise self._refuse("incr/decr", key)
        (value,) = yield Commands((("EVAL", INCR_EXISTING, 1, self.django_key(key, version), int(delta)),))
        if value is None:
            raise ValueError(f"Key '{key}' not found.")
        return int(value)

    def _get_many(self, keys: Iterable[Any], version: int | None) -> Op:
        keys = list(keys)
        ours = [key for key in keys if not self.is_keyspace_key(key)]
        found: dict[Any, Any] = {}
        raws = (yield Commands(tuple(("GET", self.django_key(key, version)) for key in ours))) if ours else []
        for key, raw in zip(ours, raws, strict=True):
            if raw is not None:
                found[key] = self._serializer.loads(raw)
        for key in keys:
            if key not in found and self.is_keyspace_key(key):
                value = yield Call("get", (key,))
                if value is not None:
                    found[key] = value
        return {key: found[key] for key in keys if key in found}

    def _set_many(self, data: Mapping[Any, Any], timeout: Any, version: int | None) -> Op:
        ttl = self._ttl(timeout)
        commands = []
        for key, value in data.items():
            if self.is_keyspace_key(key):
                yield from self._set(key, value, timeout, version)
            elif ttl == 0:
                commands.append(("DEL", self.django_key(key, version)))
            else:
                expiry = ("EX", ttl) if ttl is not None else ()
                commands.append(("SET", self.django_key(key, version), self._serializer.dumps(value), *expiry))
        if commands:
            yield Commands(tuple(commands))
        return []

    def _delete_many(self, keys: Iterable[Any], version: int | None) -> Op:
        names = []
        for key in keys:
            if self.is_keyspace_key(key):
                yield Call("delete", (key,))
            else:
                names.append(self.django_key(key, version))
        if names:  # one DEL per key: a Redis Cluster refuses one across slots
            yield Commands(tuple(("DEL", name) for name in names))

    def _clear(self) -> Op:
        names = yield Scan(f"{self.settings.key_prefix}django:*")
        for start in range(0, len(names), SCAN_BATCH):
            yield Commands(tuple(("UNLINK", name) for name in names[start:start + SCAN_BATCH]))
        return True

    # ---- the drivers -----------------------------------------------------------------------------------------
    def _run(self, op: Op) -> Any:
        cache = canonical_shared_cache(self.settings)
        reply: Any = None
        try:
            while True:
                reply = run_request(cache, op.send(reply))
        except StopIteration as stop:
            return stop.value

    async def _arun(self, op: Op) -> Any:
        cache = canonical_loop_cache(self.settings)
        reply: Any = None
        try:
            while True:
                reply = await arun_request(cache, op.send(reply))
        except StopIteration as stop:
            return stop.value

    # ---- Django's API ----------------------------------------------------------------------------------------
    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        if self.is_keyspace_key(key):  # the hit path, straight to the client (what _get does, minus the driver)
            value = canonical_shared_cache(self.settings).get(key)
            return default if value is None else value
        return self._run(self._get(key, default, version))

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return await self._arun(self._get(key, default, version))

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        self._run(self._set(key, value, timeout, version))

    async def aset(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        await self._arun(self._set(key, value, timeout, version))

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return bool(self._run(self._set(key, value, timeout, version, only_new=True)))

    async def aadd(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return bool(await self._arun(self._set(key, value, timeout, version, only_new=True)))

    def delete(self, key: Any, version: int | None = None) -> bool:
        return bool(self._run(self._delete(key, version)))

    async def adelete(self, key: Any, version: int | None = None) -> bool:
        return bool(await self._arun(self._delete(key, version)))

    def has_key(self, key: Any, version: int | None = None) -> bool:
        return bool(self._run(self._has_key(key, version)))

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        return bool(await self._arun(self._has_key(key, version)))

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return bool(self._run(self._touch(key, timeout, version)))

    async def atouch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return bool(await self._arun(self._touch(key, timeout, version)))

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return int(self._run(self._incr(key, delta, version)))

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return int(await self._arun(self._incr(key, delta, version)))

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        return dict(self._run(self._get_many(keys, version)))

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        return dict(await self._arun(self._get_many(keys, version)))

    def set_many(self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT,
                 version: int | None = None) -> list[Any]:
        return list(self._run(self._set_many(data, timeout, version)))

    async def aset_many(self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT,
                        version: int | None = None) -> list[Any]:
        return list(await self._arun(self._set_many(data, timeout, version)))

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        self._run(self._delete_many(keys, version))

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        await self._arun(self._delete_many(keys, version))

    def clear(self) -> bool:
        return bool(self._run(self._clear()))

    async def aclear(self) -> bool:
        return bool(await self._arun(self._clear()))

    def incr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        if self.is_keyspace_key(key):
            raise self._refuse("incr_version", key)
        return int(super().incr_version(key, delta, version))

    async def aincr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        if self.is_keyspace_key(key):
            raise self._refuse("incr_version", key)
        return int(await super().aincr_version(key, delta, version))


_derived: dict[tuple[Settings, tuple[tuple[str, Any], ...]], Settings] = {}


def _settings_for(base: Settings, overrides: tuple[tuple[str, Any], ...]) -> Settings:
    """`base` with a backend's OPTIONS/LOCATION applied, built once (its keyspaces file read once)."""
    if not overrides:
        return base
    settings = _derived.get((base, overrides))
    if settings is None:
        settings = _derived[(base, overrides)] = cachewarm_settings(**dict(overrides))
    return settings
