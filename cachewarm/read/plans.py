"""Plans: everything a read, write or refresh of one key needs, worked out once per key from its keyspace.

A `Planner` finds a key's keyspace (the TOML patterns), turns it into a `Plan` and memoises it; it also builds the
script calls that take a plan (lua/acquire.lua, lua/write.lua, the invalidations). The clients (Cache, AsyncCache)
and the refresh path share it; it does no I/O.

A plan holds what is per key and only that: the key, its value key (what a hit reads, kept so that a hit does no
string work) and its keyspace's `Shared` (label, TTLs in ms, hot-key bound, source, tags without placeholders), one
object per keyspace per Planner. A key's parameters, and its tags when they have placeholders, are worked out again
when a source is called or a script written (a miss or a refresh: a regex match, ~1 us, beside milliseconds).
That is ~240 bytes per memoised key with the key string and the memo's dict slots (tracemalloc,
tests/read/test_memory.py), ~4.6 MiB at the default bound of CACHEWARM_MAX_PLANS (20,000); the memo
(memo.TwoGenerationMemo) drops the least recently used keys first, gradually.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from ..config.keyspaces import Keyspace, KeyspaceRegistry, check_key, placeholders
from ..config.sources import Source, build_source
from ..errors import UnknownKeyspace
from ..redis_layer import envelope, script_calls, scripts
from ..redis_layer.keys import TAG_GRACE_MS, KeyLayout
from ..settings import Settings
from .memo import TwoGenerationMemo

TAG_BATCH = 500  # members a tag invalidation's walk asks for per step (ZSCAN COUNT)
_NO_PARAMS: Mapping[str, str] = {}


class Shared:
    """What every key of one keyspace (or of one decorated function) has in common."""

    __slots__ = ("keyspace", "label", "max_tracked", "negative_ms", "source", "stale_ms", "tags", "ttl_ms")

    def __init__(self, label: str, *, ttl: float, max_stale: float, negative_ttl: float, max_tracked: int,
                 source: Source | None, tags: tuple[str, ...] | None, keyspace: Keyspace | None) -> None:
        self.label = label                   # the keyspace name (or the decorated function): the metric label
        self.ttl_ms = int(ttl * 1000)
        self.stale_ms = int(max_stale * 1000)
        self.negative_ms = int(negative_ttl * 1000)
        self.max_tracked = max_tracked
        self.source = source
        self.tags = tags                     # None: the keyspace's tags have placeholders, filled per key
        self.keyspace = keyspace             # matches a key again for its parameters; None: no parameters


class Plan:
    """Everything a read of one key needs: the key, its value key and its keyspace's shared part."""

    __slots__ = ("_tags", "key", "shared", "value_key")

    def __init__(self, key: str, value_key: str, shared: Shared, tags: tuple[str, ...] | None = None) -> None:
        self.key = key
        self.value_key = value_key
        self.shared = shared
        self._tags = tags                    # a plan's own tags (a writer's extra ones, a decorated function's)

    def __repr__(self) -> str:
        return f"Plan({self.key!r}, {self.shared.label!r})"

    @property
    def label(self) -> str:
        return self.shared.label

    @property
    def max_tracked(self) -> int:
        return self.shared.max_tracked

    @property
    def ttl_ms(self) -> int:
        return self.shared.ttl_ms

    @property
    def stale_ms(self) -> int:
        return self.shared.stale_ms

    @property
    def negative_ms(self) -> int:
        return self.shared.negative_ms

    @property
    def source(self) -> Source | None:
        return self.shared.source

    @property
    def params(self) -> Mapping[str, str]:
        """The source's parameters, matched again from the key (a source call costs far more)."""
        keyspace = self.shared.keyspace
        found = keyspace.match(self.key) if keyspace is not None else None
        return found if found is not None else _NO_PARAMS

    @property
    def tags(self) -> tuple[str, ...]:
        if self._tags is not None:
            return self._tags
        shared = self.shared
        if shared.tags is not None:
            return shared.tags
        assert shared.keyspace is not None
        return shared.keyspace.tags_for(self.params)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _escape_glob(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class Planner:
    """Settings, keyspaces and key layout, and the memo of per-key plans built from them."""

    def __init__(self, settings: Settings, keyspaces: KeyspaceRegistry | None = None) -> None:
        self.settings = settings
        self.keyspaces = keyspaces if keyspaces is not None else settings.keyspaces
        self.layout = KeyLayout(settings.key_prefix)
        self._memo: TwoGenerationMemo[str, Plan | None] = TwoGenerationMemo(settings.max_plans)
        # key -> plan (None: no keyspace matches), the memo's current generation. The hit path reads it directly:
        # a dict lookup, no call. The clients hold this dict: it is cleared in place, never replaced.
        self.known = self._memo.current
        self._shared: dict[str, Shared] = {}   # keyspace name -> its shared part

    @property
    def memo_size(self) -> int:
        """Plans memoised now: at most CACHEWARM_MAX_PLANS."""
        return len(self._memo)

    def memoised(self, key: str) -> bool:
        """Whether the plan of key is memoised (a read of it derives nothing)."""
        return key in self._memo

    # ---- plans ----------------------------------------------------------------------------------------------
    def plan(self, key: str) -> Plan | None:
        """The plan of a key of some keyspace; None for a key no keyspace matches."""
        try:
            return self.known[key]
        except KeyError:
            return self._memo.get(key, self._derive)

    def _derive(self, key: str) -> Plan | None:
        found = self.keyspaces.find(key)
        if found is None:
            return None
        ks = found[0]
        shared = self._shared.get(ks.name)
        if shared is None:
            shared = self._shared[ks.name] = self._keyspace_shared(ks)
        return Plan(key, self.layout.value(key), shared)

    def _keyspace_shared(self, ks: Keyspace) -> Shared:
        cfg = ks.config
        neg = cfg.negative_ttl if cfg.negative_ttl is not None else self.settings.negative_ttl
        templated = any(placeholders(t) for t in ks.tag_templates)
        return Shared(ks.name, ttl=cfg.ttl, max_stale=cfg.max_stale, negative_ttl=neg,
                      max_tracked=cfg.max_tracked or self.settings.max_tracked_keys,
                      source=build_source(ks, default_timeout=self.settings.source_timeout),
                      tags=None if templated else tuple(ks.tag_templates), keyspace=ks)

    def require_plan(self, key: str) -> Plan:
        """The plan of a key to read through; UnknownKeyspace when no keyspace (so no source) matches it."""
        plan = self.plan(check_key(key))
        if plan is None:
            raise UnknownKeyspace(f"no keyspace pattern matches key {key[:200]!r}: cannot read it through")
        return plan

    def function_plan(self, key: str, label: str, ttl: float, tags: tuple[str, ...]) -> Plan:
        """The plan of a decorated function's result (the client's `cached`): no source, no stale serving."""
        return self._bare_plan(key, label, ttl, tags)

    def _bare_plan(self, key: str, label: str, ttl: float, tags: tuple[str, ...]) -> Plan:
        shared = Shared(label, ttl=ttl, max_stale=0, negative_ttl=0, max_tracked=self.settings.max_tracked_keys,
                        source=None, tags=(), keyspace=None)
        return Plan(key, self.layout.value(key), shared, tags)

    # ---- script calls ---------------------------------------------------------------------------------------
    def write_call(self, plan: Plan, value_json: str | None, *, fence: str, lease_token: str, version: int | None,
                   ttl_ms: int | None = None, bump: bool = False) -> scripts.Call[script_calls.WriteStatus]:
        """The WRITE of a value (value_json) or of a remembered "no such item"."""
        now = _now_ms()
        if value_json is None:
            ttl = px = plan.negative_ms
        else:
            ttl = ttl_ms if ttl_ms is not None else plan.ttl_ms
            px = ttl + plan.stale_ms
        raw = envelope.encode(value_json, fetched_ms=now, ttl_ms=ttl, version=version)
        return script_calls.write(self.layout, key=plan.key, envelope=raw, px=px, fence=fence,
                                  lease_token=lease_token, version=version, fence_ttl=self.settings.fence_ttl,
                                  bump=bump)

    def enlist_calls(self, plan: Plan, ttl_ms: int | None = None) -> list[scripts.Call[None]]:
        """A tagged key's ENLIST in each tag's set: before its load takes its fence token, and with its write
        (keys.py: why a tag invalidation then fences every load in flight). Empty for an untagged key."""
        tags = plan.tags
        if not tags:
            return []
        keep = max(plan.negative_ms, (plan.ttl_ms if ttl_ms is None else ttl_ms) + plan.stale_ms) + TAG_GRACE_MS
        return [script_calls.enlist(self.layout, tag=tag, key=plan.key, keep_ms=keep) for tag in tags]

    def set_calls(self, key: str, value: Any, ttl: float | None, tags: Iterable[str],
                  version: int | None) -> list[scripts.Call[Any]]:
        """A writer's `set` (its WRITE, then its ENLISTs, to be sent first): unfenced, and fencing every load of the
        key in flight. The keyspace's TTL and tags, or a bare plan when no keyspace matches (then `ttl` is
        required)."""
        check_key(key)
        if value is None:
            raise ValueError("None cannot be stored: it means 'no such item'; use delete()")
        plan = self.plan(key)
        extra = tuple(tags)
        if plan is None:
            if ttl is None:
                raise UnknownKeyspace(f"no keyspace matches key {key[:200]!r}; give set() a ttl")
            plan = self._bare_plan(key, "_none", ttl, extra)
        elif extra:
            plan = Plan(plan.key, plan.value_key, plan.shared, tuple(dict.fromkeys(plan.tags + extra)))
        ttl_ms = int(ttl * 1000) if ttl is not None else plan.ttl_ms
        if ttl_ms <= 0:
            raise ValueError("ttl must be positive")
        return [self.write_call(plan, envelope.dumps(value), fence="*", lease_token="", version=version,
                                ttl_ms=ttl_ms, bump=True), *self.enlist_calls(plan, ttl_ms)]

    def acquire_call(self, plan: Plan, token: str) -> scripts.Call[script_calls.Acquired]:
        """ACQUIRE; a tagged key's `enlist_calls` go first (a round trip before it)."""
        return script_calls.acquire(self.layout, key=plan.key, token=token, lease_ms=self.settings.lease_ms,
                                    fence_keep_ms=self.fence_keep_ms(plan))

    def fence_keep_ms(self, plan: Plan) -> int:
        """How long a fence made when a load takes its token is kept: the value's life and the lease's."""
        return max(plan.negative_ms, plan.ttl_ms + plan.stale_ms) + self.settings.lease_ms

    def release_call(self, plan: Plan, token: str) -> scripts.Call[None]:
        return script_calls.release(self.layout, key=plan.key, lease_token=token)

    def invalidate_call(self, key: str) -> scripts.Call[script_calls.Invalidated]:
        return script_calls.invalidate_key(self.layout, key=check_key(key), version=None,
                                           fence_ttl=self.settings.fence_ttl)

    def clear_match(self, prefix: str) -> str:
        """The SCAN pattern of every value key whose cache key starts with `prefix` (taken literally)."""
        return self.layout.value_prefix + _escape_glob(prefix) + "*"

    def clear_calls(self, names: list[bytes]) -> list[scripts.Call[script_calls.Invalidated]]:
        """The invalidation of each SCANned value key name."""
        prefix = self.layout.value_prefix
        return [script_calls.invalidate_key(self.layout, key=KeyLayout.key_of(name, prefix), version=None,
                                            fence_ttl=self.settings.fence_ttl) for name in names]

    def tag_step_calls(self, tag: str, cursor: str, members: list[bytes]) -> list[scripts.Call[Any]]:
        """One step of a tag invalidation's walk, for one pipeline: the invalidation of each member found by the
        previous step (each in its own slot), then the next TAG_MEMBERS (cursor "0" and no members: the first)."""
        fence_ttl = self.settings.fence_ttl
        calls: list[scripts.Call[Any]] = [
            script_calls.invalidate_key(self.layout, key=m.decode("utf-8", "surrogateescape"), version=None,
                                        fence_ttl=fence_ttl) for m in members]
        if cursor != "0" or not members:
            calls.append(script_calls.tag_members(self.layout, tag=check_key(tag), cursor=cursor, count=TAG_BATCH))
        return calls
