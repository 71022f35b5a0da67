"""Plans: everything a read, write or refresh of one key needs, worked out once per key from its keyspace.

A `Planner` finds a key's keyspace (the TOML patterns), turns its config into a `Plan` (value key, TTLs in ms,
tags, source) and memoises it; it also builds the script calls that take a plan (lua/acquire.lua, lua/write.lua,
the invalidations). The clients (Cache, AsyncCache) and the refresh path share it; it does no I/O.

The memo is bounded (CACHEWARM_MAX_PLANS keys, ~0.7 KB each) and keeps the keys used lately, approximating least
recently used at no cost to a hit: two generations, the current one (`known`, read directly by the hit path) and
the previous one. A miss looks in the previous generation before deriving the plan and moves what it finds into
the current one; when the current one holds half the bound it becomes the previous one, and what the previous one
still held (keys nobody asked for during a whole generation) is dropped. A key used within the last bound/2 new
keys is never derived again; an OrderedDict's move_to_end on every hit would cost the hit path time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import envelope, script_calls, scripts
from .errors import UnknownKeyspace
from .keys import KeyLayout
from .keyspaces import KeyspaceRegistry, check_key
from .settings import Settings
from .sources import Source, build_source

TAG_BATCH = 500  # members invalidated per TAG_DRAIN call


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything a read of one key needs."""

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
        # key -> plan (None: no keyspace matches), the current generation. The hit path reads it directly: a dict
        # lookup, no call. The clients hold this dict: it is cleared in place, never replaced.
        self.known: dict[str, Plan | None] = {}
        self._previous: dict[str, Plan | None] = {}
        self._generation = max(1, settings.max_plans // 2)

    @property
    def memo_size(self) -> int:
        """Plans memoised now: at most CACHEWARM_MAX_PLANS."""
        return len(self.known) + len(self._previous)

    def memoised(self, key: str) -> bool:
        """Whether the plan of key is memoised (a read of it derives nothing)."""
        return key in self.known or key in self._previous

    # ---- plans ----------------------------------------------------------------------------------------------
    def plan(self, key: str) -> Plan | None:
        """The plan of a key of some keyspace; None for a key no keyspace matches."""
        try:
            return self.known[key]
        except KeyError:
            pass
        try:
            plan = self._previous.pop(key)
        except KeyError:
            plan = self._derive(key)
        known = self.known
        if len(known) >= self._generation:
            self._previous = known.copy()
            known.clear()
        known[key] = plan
        return plan

    def _derive(self, key: str) -> Plan | None:
        found = self.keyspaces.find(key)
        plan = None
        if found is not None:
            ks, params = found
            cfg = ks.config
            neg = cfg.negative_ttl if cfg.negative_ttl is not None else self.settings.negative_ttl
            plan = self._make(key, ks.name, ttl=cfg.ttl, max_stale=cfg.max_stale, negative_ttl=neg,
                              tags=ks.tags_for(params), max_tracked=cfg.max_tracked,
                              source=build_source(ks, default_timeout=self.settings.source_timeout), params=params)
        return plan

    def require_plan(self, key: str) -> Plan:
        """The plan of a key to read through; UnknownKeyspace when no keyspace (so no source) matches it."""
        plan = self.plan(check_key(key))
        if plan is None:
            raise UnknownKeyspace(f"no keyspace pattern matches key {key[:200]!r}: cannot read it through")
        return plan

    def function_plan(self, key: str, label: str, ttl: float, tags: tuple[str, ...]) -> Plan:
        """The plan of a decorated function's result (the client's `cached`): no source, no stale serving."""
        return self._make(key, label, ttl=ttl, max_stale=0, negative_ttl=0, tags=tags, max_tracked=None,
                          source=None, params={})

    def _make(self, key: str, label: str, *, ttl: float, max_stale: float, negative_ttl: float,
              tags: tuple[str, ...], max_tracked: int | None, source: Source | None,
              params: Mapping[str, str]) -> Plan:
        return Plan(key, label, self.layout.value(key), max_tracked or self.settings.max_tracked_keys,
                    int(ttl * 1000), int(max_stale * 1000), int(negative_ttl * 1000), tags, source, params)

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
        return script_calls.write(self.layout, key=plan.key, tags=plan.tags, envelope=raw, px=px, fence=fence,
                                  lease_token=lease_token, version=version, fence_ttl=self.settings.fence_ttl,
                                  bump=bump)

    def set_call(self, key: str, value: Any, ttl: float | None, tags: Iterable[str],
                 version: int | None) -> scripts.Call[script_calls.WriteStatus]:
        """A writer's `set`: unfenced, and fencing every load of the key in flight. The keyspace's TTL and tags,
        or a bare plan when no keyspace matches (then `ttl` is required)."""
        check_key(key)
        if value is None:
            raise ValueError("None cannot be stored: it means 'no such item'; use delete()")
        plan = self.plan(key)
        extra = tuple(tags)
        if plan is None:
            if ttl is None:
                raise UnknownKeyspace(f"no keyspace matches key {key[:200]!r}; give set() a ttl")
            plan = self._make(key, "_none", ttl=ttl, max_stale=0, negative_ttl=0, tags=extra, max_tracked=None,
                              source=None, params={})
        elif extra:
            plan = replace(plan, tags=tuple(dict.fromkeys(plan.tags + extra)))
        ttl_ms = int(ttl * 1000) if ttl is not None else plan.ttl_ms
        if ttl_ms <= 0:
            raise ValueError("ttl must be positive")
        return self.write_call(plan, envelope.dumps(value), fence="*", lease_token="", version=version,
                               ttl_ms=ttl_ms, bump=True)

    def acquire_call(self, plan: Plan, token: str) -> scripts.Call[script_calls.Acquired]:
        return script_calls.acquire(self.layout, key=plan.key, tags=plan.tags, token=token,
                                    lease_ms=self.settings.lease_ms)

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
        skip = len(self.layout.value_prefix)
        return [script_calls.invalidate_key(self.layout, key=name.decode("utf-8", "surrogateescape")[skip:],
                                            version=None, fence_ttl=self.settings.fence_ttl) for name in names]

    def tag_bump_call(self, tag: str) -> scripts.Call[script_calls.TagBatch]:
        return script_calls.tag_bump(self.layout, tag=check_key(tag), fence_ttl=self.settings.fence_ttl,
                                     batch=TAG_BATCH)

    def tag_drain_call(self, tag: str, members: list[bytes]) -> scripts.Call[script_calls.TagBatch]:
        return script_calls.tag_drain(self.layout, tag=tag, members=members, fence_ttl=self.settings.fence_ttl,
                                      batch=TAG_BATCH)
