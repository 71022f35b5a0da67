"""A ``CACHES`` backend: keyspace keys read through cachewarm, every other key as Django's own Redis cache.

    CACHES = {"cachewarm": {"BACKEND": "cachewarm.contrib.django.cache.CachewarmCache",
                            "LOCATION": "redis://127.0.0.1:6379/0",      # optional: CACHEWARM["REDIS_URL"]
                            "OPTIONS": {"CONFIG": "cachewarm.toml"}}}     # optional: any cachewarm setting

A key some keyspace pattern matches (``product:42``) is cachewarm's: `get` is `Cache.get` (a miss loads it through
the keyspace's source, single flight, fenced), `set`/`add` store JSON with the keyspace's TTL (Django's default
timeout means that TTL; a positive one replaces it; zero or less deletes), `delete` also fences loads in flight.
`has_key`, ``in`` and `add` look at what is cached without loading it: a value is there, or not (a remembered "no
such item" is not a value: `get` answers the default for it, `add` replaces it). Such keys are used as they are:
Django's ``KEY_PREFIX``, ``VERSION`` and ``KEY_FUNCTION`` do not apply to them (workers, other processes and other
languages know them by that name). What would not follow Django's semantics for them raises one error that says
why, never does something else quietly (docs/DJANGO.md has the whole table): ``version=``, ``timeout=None``
(their values live for the keyspace's TTL), a value JSON cannot hold as it is (a tuple, bytes, a model instance,
a dict with keys that are not strings) or None (it means "no such item"), and `incr`, `decr`, `touch` and
`incr_version` (their values and TTLs come from the keyspace). `add` is a look then a `set`: not atomic against a
concurrent writer of the same key.

Every other key is Django's, with Django's semantics: its ``KEY_PREFIX``/``VERSION``/``KEY_FUNCTION``, pickled
values (integers raw, so `incr` is INCRBY), stored under ``<CACHEWARM_KEY_PREFIX>django:`` in the same Redis
(an ACL user limited to cachewarm's keys can use them). `clear` removes those keys only (SCAN + UNLINK, never
FLUSHDB: the invalidation stream and the fences live in that database); keyspace values are cleared with
cachewarm's own `clear` / `invalidate_tag`. Errors as Django's Redis backend raises them (cache_io.py): an
unpicklable value raises pickle's error, `incr` of a value that is not an integer a TypeError (that is also
redis-py's ResponseError); only a Redis that cannot serve is `CacheUnavailable`.

The async twins (`aget`, ...) are native: `AsyncCache` (one per event loop) and the asyncio Redis client, not
Django's thread hop; pickling a value that is not a small str, bytes or number (it may run SQL: a queryset) and
unpickling a large one run in a thread, as Django's own backends do. Each operation is written once, as a
generator of I/O requests that a sync and an async driver run, so that the twins cannot drift. Clients are
shared by every backend instance of the process with the same settings (Django makes one instance per thread).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.cache.backends.redis import RedisSerializer

from ...config.keyspaces import KeyspaceRegistry
from ...errors import InvalidKey
from ...settings import Settings
from .cache_io import (
    Call,
    Commands,
    Head,
    Op,
    Scan,
    Work,
    arun_op,
    canonical,
    canonical_loop_cache,
    canonical_shared_cache,
    holds_value,
    run_op,
)
from .conf import cachewarm_settings, settings_for, settings_values
from .values import INLINE_BYTES, exact_json, inline, not_an_integer

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
            settings = canonical(settings_for(base, self._overrides))
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

    def _keyspace_ttl(self, key: str, timeout: Any) -> float | None:
        """Django's timeout for a keyspace key: the default means the keyspace's TTL (None to `set`)."""
        if timeout is DEFAULT_TIMEOUT:
            return None
        if timeout is None:
            raise ValueError(f"timeout=None (never expire) does not apply to keyspace key {key[:100]!r}: its values "
                             "live for the keyspace's TTL and are refreshed from its source; leave the timeout out "
                             "(the keyspace's TTL) or give seconds")
        return max(0.0, float(timeout))

    def _refuse(self, operation: str, key: str) -> ValueError:
        return ValueError(f"{operation} does not apply to keyspace key {key[:100]!r}: its value and TTL come from "
                          "its keyspace (use another key, or cachewarm's own API)")

    def _ours(self, key: Any, version: int | None) -> bool:
        """`is_keyspace_key`, refusing a version for such a key (Django's versions do not apply to it)."""
        if not self.is_keyspace_key(key):
            return False
        if version is not None:
            raise ValueError(f"version={version!r} does not apply to keyspace key {key[:100]!r}: it is used as it "
                             "is, without Django's VERSION, KEY_PREFIX or KEY_FUNCTION (other processes and "
                             "languages know it by that name)")
        return True

    def _keyspace_value(self, key: str, value: Any) -> None:
        if value is None:
            raise ValueError(f"None cannot be stored under keyspace key {key[:100]!r}: for a keyspace key None "
                             "means 'no such item' (get() would answer the default); use delete()")
        exact_json(value, key)

    # ---- pickling (blocking: in a thread for the async twins) -------------------------------------------------
    def _dumps(self, value: Any) -> Generator[Any, Any, Any]:
        if inline(value):
            return self._serializer.dumps(value)
        return (yield Work(self._serializer.dumps, (value,)))

    def _loads(self, raw: bytes) -> Generator[Any, Any, Any]:
        if len(raw) <= INLINE_BYTES:
            return self._serializer.loads(raw)
        return (yield Work(self._serializer.loads, (raw,)))

    def _dumps_all(self, values: list[Any]) -> Generator[Any, Any, list[Any]]:
        """Each value pickled; those that are not inline in one thread hop."""
        heavy = [i for i, value in enumerate(values) if not inline(value)]
        skip = set(heavy)
        out = [value if i in skip else self._serializer.dumps(value) for i, value in enumerate(values)]
        if heavy:
            dumps = self._serializer.dumps
            done = yield Work(lambda items: [dumps(item) for item in items], ([values[i] for i in heavy],))
            for i, data in zip(heavy, done, strict=True):
                out[i] = data
        return out

    # ---- operations, written once (generators of requests) ---------------------------------------------------
    def _get(self, key: Any, default: Any, version: int | None) -> Op:
        if self._ours(key, version):
            value = yield Call("get", (key,))
            return default if value is None else value  # None: the source has no such item
        (raw,) = yield Commands((("GET", self.django_key(key, version)),))
        if raw is None:
            return default
        return (yield from self._loads(raw))  # a stored None is None, as in Django

    def _set(self, key: Any, value: Any, timeout: Any, version: int | None, *, only_new: bool = False) -> Op:
        if self._ours(key, version):
            ttl = self._keyspace_ttl(key, timeout)
            self._keyspace_value(key, value)
            if only_new and holds_value((yield Head(key))):
                return False
            if ttl == 0:
                yield Call("delete", (key,))
                return True
            return bool((yield Call("set", (key, value, ttl))))
        name, ttl_s = self.django_key(key, version), self._ttl(timeout)
        data = yield from self._dumps(value)
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
        if self._ours(key, version):
            return bool((yield Call("delete", (key,))))
        (count,) = yield Commands((("DEL", self.django_key(key, version)),))
        return bool(count)

    def _has_key(self, key: Any, version: int | None) -> Op:
        if self._ours(key, version):  # what get() would answer without loading: a value, not a remembered miss
            return holds_value((yield Head(key)))
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
        djangos = [key for key in keys if not self._ours(key, version)]
        found: dict[Any, Any] = {}
        raws = (yield Commands(tuple(("GET", self.django_key(key, version)) for key in djangos))) if djangos else []
        stored = [(key, raw) for key, raw in zip(djangos, raws, strict=True) if raw is not None]
        heavy = [(key, raw) for key, raw in stored if len(raw) > INLINE_BYTES]
        for key, raw in stored:
            if len(raw) <= INLINE_BYTES:
                found[key] = self._serializer.loads(raw)
        if heavy:
            loads = self._serializer.loads
            values = yield Work(lambda raws: [loads(raw) for raw in raws], ([raw for _, raw in heavy],))
            found.update(zip([key for key, _ in heavy], values, strict=True))
        for key in keys:
            if key not in found and self.is_keyspace_key(key):
                value = yield Call("get", (key,))
                if value is not None:
                    found[key] = value
        return {key: found[key] for key in keys if key in found}

    def _set_many(self, data: Mapping[Any, Any], timeout: Any, version: int | None) -> Op:
        djangos = [(key, value) for key, value in data.items() if not self._ours(key, version)]
        for key, value in data.items():  # every keyspace value checked before anything is written
            if self.is_keyspace_key(key):
                self._keyspace_ttl(key, timeout)
                self._keyspace_value(key, value)
        ttl = self._ttl(timeout)
        commands = []
        if ttl == 0:
            commands = [("DEL", self.django_key(key, version)) for key, _ in djangos]
        elif djangos:
            pickled = yield from self._dumps_all([value for _, value in djangos])
            expiry = ("EX", ttl) if ttl is not None else ()
            commands = [("SET", self.django_key(key, version), blob, *expiry)
                        for (key, _), blob in zip(djangos, pickled, strict=True)]
        for key, value in data.items():
            if self.is_keyspace_key(key):
                yield from self._set(key, value, timeout, version)
        if commands:
            yield Commands(tuple(commands))
        return []

    def _delete_many(self, keys: Iterable[Any], version: int | None) -> Op:
        names = []
        for key in keys:
            if self._ours(key, version):
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

    def _run(self, op: Op) -> Any:
        return run_op(canonical_shared_cache(self.settings), op)

    async def _arun(self, op: Op) -> Any:
        return await arun_op(canonical_loop_cache(self.settings), op)

    # ---- Django's API ----------------------------------------------------------------------------------------
    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        if self.is_keyspace_key(key) and version is None:
            # the hit path, straight to the client (what _get does, minus the driver)
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
        with not_an_integer(key, delta):
            return int(self._run(self._incr(key, delta, version)))

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        with not_an_integer(key, delta):
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
