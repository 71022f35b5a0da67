"""Stream retention gaps: events trimmed (or deleted) from the stream before the consumer group read them.

The stream is trimmed to about ``stream_maxlen`` entries; a group offline long enough loses events it never read,
and nothing tells it which keys they named. So a gap is detected, never ignored, and answered by dropping what any
lost event could have invalidated: every cached value (fence bumped, value deleted) and the fence of every load in
flight (its lease); a tagged key is one of these too, so tags need nothing of their own.

Detection runs atomically with every read of new entries (`check_and_read`, one Lua script), so the group's
last-delivered id L cannot move past a hole between the check and the read. With the stream's first entry F,
``entries-added`` A, length N, the group's ``entries-read`` E and ``max-deleted-entry-id`` D (Redis 7):

- D > L: an entry after L was deleted (XDEL) unread;
- stream empty and last-generated-id > L: entries after L were added and all removed;
- F > L: entries between L and F may have been trimmed. Lost = A - E - N when E is known (A - N for a group that
  has read nothing, L = 0-0); when neither is known (Redis < 7, or E undeterminable) it is taken as a gap.

A brand-new stream, a group created on an untrimmed stream, or a caught-up group whose read entries were trimmed
is not a gap. The detection is recorded (``pending`` in the ``invalidation:gap`` hash) before the read moves L, so
a consumer killed while answering leaves it for another to finish (taken over after ``claim_idle_ms``); once
answered, ``answered`` holds the hole's upper bound (the first entry after it), so it is not answered twice.
Entries deleted while pending (XAUTOCLAIM reports them; a re-read gives them without fields) are gaps too.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from ..config.keyspaces import KeyspaceRegistry
from ..redis_layer import script_calls, scripts
from ..redis_layer.keys import INVALIDATION_STREAM, KeyLayout
from ..settings import Settings
from .apply import hot_keys

log = logging.getLogger("cachewarm.invalidation")

SCAN_COUNT = 1000


def gap_hash(layout: KeyLayout) -> str:
    return layout.invalidation_gap()


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


@dataclass(frozen=True, slots=True)
class Gap:
    """A hole found in the stream: the lost entries' ids are at most `upper`; once answered, a hole at or below
    it is not answered again."""

    upper: str
    lost: int  # entries lost, -1 when Redis cannot tell
    reason: str


def drop_everything(client: redis.Redis, layout: KeyLayout, *, fence_ttl: int,
                    keyspaces: KeyspaceRegistry | None = None,
                    half_life: float = Settings.model_fields["hot_half_life"].default,
                    threshold: float = Settings.model_fields["hot_threshold"].default,
                    on_hot_keys: Callable[[list[str]], None] | None = None,
                    heartbeat: Callable[[], None] | None = None) -> int:
    """Fences and deletes every cached value and fences every load in flight (found by its lease): SCAN (of every
    node of a Redis Cluster), then one pipelined INVALIDATE_KEY per key, in its own slot. A tag needs nothing of its
    own: its members are among the keys. Hot keys among the dropped go to `on_hot_keys`. Returns values deleted."""
    dropped_total = 0
    match = _glob_escape(layout.prefix) + "*"
    value_p, lease_p = layout.value_prefix.encode(), layout.lease_prefix.encode()
    batch: dict[str, None] = {}

    def drop(keys: list[str]) -> None:
        nonlocal dropped_total
        calls = [script_calls.invalidate_key(layout, key=key, version=None, fence_ttl=fence_ttl) for key in keys]
        replies = scripts.execute(client, calls)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        dropped = [key for key, reply in zip(keys, replies, strict=True) if reply.deleted]
        dropped_total += len(dropped)
        if on_hot_keys is not None and keyspaces is not None and dropped:
            hot = hot_keys(client, dropped, keyspaces=keyspaces, layout=layout, half_life=half_life,
                           threshold=threshold)
            if hot:
                on_hot_keys(hot)
        if heartbeat is not None:
            heartbeat()

    for name in client.scan_iter(match=match, count=SCAN_COUNT):
        if isinstance(name, bytes) and name.startswith(value_p):
            batch.setdefault(KeyLayout.key_of(name, layout.value_prefix))
        elif isinstance(name, bytes) and name.startswith(lease_p):
            batch.setdefault(KeyLayout.key_of(name, layout.lease_prefix))
        if len(batch) >= SCAN_COUNT:
            drop(list(batch))
            batch.clear()
    drop(list(batch))
    return dropped_total


def record_gap(client: redis.Redis, layout: KeyLayout, upper: str, consumer: str, *, force: bool = False) -> bool:
    """Records a gap found outside CHECK_AND_READ (before answering it, so that a consumer killed meanwhile
    leaves it to another); False when an answer already covers it (never with `force`)."""
    return scripts.run(client, script_calls.record_gap(layout, upper=upper, now_ms=int(time.time() * 1000),
                                                       consumer=consumer, force=force))


def answer(client: redis.Redis, layout: KeyLayout, gap: Gap, *, consumer: str, fence_ttl: int,
           keyspaces: KeyspaceRegistry, half_life: float, threshold: float,
           on_hot_keys: Callable[[list[str]], None] | None) -> int:
    """Answers a gap: drops every cached value (fenced; the hot ones among them go to `on_hot_keys`), saying in
    the gap hash who is at it (``pending_at`` / ``pending_by``: taken over when stale), then marks it answered.
    Returns the values dropped."""
    lost = "an unknown number of" if gap.lost < 0 else str(gap.lost)
    log.warning("invalidation gap: %s events lost (%s, up to %s); dropping every cached value", lost,
                gap.reason, gap.upper)
    started = time.monotonic()
    hb_key = gap_hash(layout)

    def heartbeat() -> None:
        client.hset(hb_key, mapping={"pending_at": int(time.time() * 1000), "pending_by": consumer})

    dropped = drop_everything(client, layout, fence_ttl=fence_ttl, keyspaces=keyspaces, half_life=half_life,
                              threshold=threshold, on_hot_keys=on_hot_keys, heartbeat=heartbeat)
    mark_answered(client, layout, gap.upper, dropped)
    log.warning("invalidation gap answered: %d cached values dropped in %.2f s", dropped, time.monotonic() - started)
    return dropped


def mark_answered(client: redis.Redis, layout: KeyLayout, upper: str, dropped: int) -> None:
    """Marks the gap answered (in the stream's slot), then counts it in refresh:stats (a slot of its own)."""
    scripts.run(client, script_calls.gap_answered(layout, upper=upper))
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(layout.refresh_stats, "invalidation_gaps", 1)
    pipe.hincrby(layout.refresh_stats, "invalidation_gap_keys", dropped)
    pipe.execute()


def check_and_read(client: redis.Redis, layout: KeyLayout, *, group: str, consumer: str, count: int,
                   acks: Sequence[str]) -> script_calls.GapCheck:
    """Acknowledges `acks`, checks the stream for a new gap (recorded pending) and reads new entries, atomically
    (lua/check_and_read.lua)."""
    return scripts.run(client, script_calls.check_and_read(
        layout, stream=INVALIDATION_STREAM, group=group, consumer=consumer, count=count,
        now_ms=int(time.time() * 1000), acks=acks))


def stale_pending_gap(client: redis.Redis, layout: KeyLayout, idle_ms: int) -> str | None:
    """A gap recorded by a consumer that has not finished answering it for `idle_ms` (killed, most likely)."""
    raw: Any = client.hmget(gap_hash(layout), "pending", "pending_at")
    pending, at = raw
    if pending is None:
        return None
    if at is not None and time.time() * 1000 - float(at) < idle_ms:
        return None
    return str(pending.decode() if isinstance(pending, bytes) else pending)
