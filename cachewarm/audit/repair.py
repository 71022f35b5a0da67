"""Repairing a stale value: the invalidation a writer should have published, applied as any other (apply.py:
the fence bumped, so no load in flight can write back what it fetched before; the version floor raised to the
source's version when the keyspace is versioned; the value deleted), then, when the key is hot, a refresh, so that
its readers get the new value from the cache rather than each a miss."""

from __future__ import annotations

from collections.abc import Callable

import redis

from ..invalidation.apply import Hotness, apply_events
from ..invalidation.events import Event
from ..outcomes import InvalidationOutcome
from ..redis_layer.keys import KeyLayout

AUDIT_ENTRY = "audit"  # the entry id the auditor's own events carry (they never were stream entries)


class Repairer:
    """Invalidates stale values (fenced) and hands the hot ones to `refresh` (the sidecar's hot refresher)."""

    def __init__(self, client: redis.Redis, layout: KeyLayout, *, fence_ttl: int, hotness: Hotness,
                 refresh: Callable[[list[str]], None] | None = None) -> None:
        self.client, self.layout, self.fence_ttl = client, layout, fence_ttl
        self.hotness, self.refresh = hotness, refresh

    def repair(self, key: str, version: int | None) -> bool:
        """Invalidates the key's value; True when it did (False: the cache already holds `version` or newer).
        Raises redis.RedisError."""
        applied = apply_events(self.client, [Event(AUDIT_ENTRY, "key", key, version)], layout=self.layout,
                               fence_ttl=self.fence_ttl, hotness=self.hotness)
        outcome = applied.outcomes[AUDIT_ENTRY]
        if outcome is InvalidationOutcome.ERROR:
            raise redis.RedisError(applied.errors.get(AUDIT_ENTRY, "invalidation failed"))
        if applied.hot and self.refresh is not None:
            self.refresh(applied.hot)
        return outcome is InvalidationOutcome.APPLIED
