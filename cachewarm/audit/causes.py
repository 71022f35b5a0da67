"""Why a value stayed stale, from what the auditor can see (docs/AUDIT.md, "What the auditor can see").

In order of precedence:

- **late**: an invalidation naming the key, or one of its tags, is still in the stream undelivered or pending
  (read, not yet acknowledged): it will arrive, but later than the grace window;
- **raced**: the key's fence records an invalidation applied (``i``, Redis ms of its last bump, lua/preamble.lua)
  after, or within the grace window before, the value's fetch: the event came, yet a load wrote the old value
  (a source replica that had not caught up, an event published before the commit);
- **flapping**: the source gave a different value at the re-check than at the first look: it changes faster
  than the window, and the event of its latest change may still be on its way;
- **missed**: none of these: no event for the key since the value was fetched. A writer changed the source
  without publishing, or an event was lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis

from ..config.sources import Fetched
from ..invalidation.events import id_order, stream_id
from ..outcomes import AuditCause
from ..redis_layer.envelope import Entry
from ..redis_layer.keys import CONSUMER_GROUP, INVALIDATION_STREAM, KeyLayout
from .checking import same_source

SCAN_LIMIT = 10_000  # stream entries looked through at most for a key's undelivered or pending event


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _unapplied(client: redis.Redis) -> tuple[str, set[str], str | None] | None:
    """Where the unapplied entries start: (XRANGE start, the pending ids, the group's last-delivered id, None when
    there is no group: every entry is undelivered); None when there is no stream."""
    try:
        groups = client.xinfo_groups(INVALIDATION_STREAM)
    except redis.ResponseError:  # no stream: nothing was ever published
        return None
    group = next((g for g in groups if _text(g.get("name")) == CONSUMER_GROUP), None)
    if group is None:
        return "-", set(), None
    last = _text(group.get("last-delivered-id") or "0-0")
    listed: Any = client.xpending_range(INVALIDATION_STREAM, CONSUMER_GROUP, min="-", max="+", count=SCAN_LIMIT)
    pending = {stream_id(p["message_id"]) for p in listed}
    start = min(pending, key=id_order) if pending else "(" + last
    return start, pending, last


def in_flight(client: redis.Redis, key: str, tags: Iterable[str]) -> bool:
    """Whether an undelivered or pending invalidation names the key or one of its tags; raises redis.RedisError."""
    found = _unapplied(client)
    if found is None:
        return False
    start, pending, last = found
    want_key, want_tags = key.encode("utf-8", "surrogateescape"), {t.encode() for t in tags}
    entries: Any = client.xrange(INVALIDATION_STREAM, min=start, max="+", count=SCAN_LIMIT)
    for raw_id, fields in entries or ():
        eid = stream_id(raw_id)
        if last is not None and eid not in pending and id_order(eid) <= id_order(last):
            continue  # delivered and acknowledged
        if fields.get(b"key") == want_key or fields.get(b"tag") in want_tags:
            return True
    return False


def unapplied_age(client: redis.Redis, now_ms: int) -> float:
    """Seconds since the oldest invalidation not yet applied was published (0: none): the invalidation lag as it
    stands; raises redis.RedisError."""
    found = _unapplied(client)
    if found is None:
        return 0.0
    start = found[0]
    first: Any = client.xrange(INVALIDATION_STREAM, min=start, max="+", count=1)
    if not first:
        return 0.0
    return max(0.0, (now_ms - id_order(stream_id(first[0][0]))[0]) / 1000)


def applied_at(client: redis.Redis, layout: KeyLayout, key: str) -> int | None:
    """Redis ms of the key's last applied invalidation (its fence's ``i``), or None."""
    raw = client.hget(layout.fence(key), "i")
    return int(raw) if raw is not None else None


def classify(client: redis.Redis, layout: KeyLayout, *, key: str, tags: Iterable[str], cached: Entry,
             first: Fetched, second: Fetched, window_ms: int, versioned: bool) -> AuditCause:
    """The cause of an inconsistency (module docstring); raises redis.RedisError."""
    if in_flight(client, key, tags):
        return AuditCause.LATE
    bumped = applied_at(client, layout, key)
    if bumped is not None and bumped >= cached.fetched_ms - window_ms:
        return AuditCause.RACED
    if not same_source(first, second, versioned=versioned):
        return AuditCause.FLAPPING
    return AuditCause.MISSED
