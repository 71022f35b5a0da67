"""One typed function per Lua script: keyword arguments in, a `Call` out whose reply decodes to a named result.

Every key a script touches is built here from the `KeyLayout` and passed in KEYS (so a Redis ACL key pattern, and
Redis Cluster, see them all); scripts that work on members read elsewhere (a tag's set, a SCAN batch) get those
members' keys in KEYS too. Send a call with scripts.run / arun / execute / aexecute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple

from .keys import KeyLayout
from .scripts import Call, script


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


# ---- the read path and writes (store.py) ------------------------------------------------------------------------
class AcquireStatus(Enum):
    FRESH = 1       # another loader just wrote the value: here it is
    LOAD = 0        # the lease is yours: load, then WRITE with the fence token
    WAIT = 2        # another loader holds the lease: wait on the wake list


class Acquired(NamedTuple):
    status: AcquireStatus
    value: bytes | None       # the value (fresh, or expired: served if the load fails)
    fence: str                # LOAD: the fence token to write with
    lease_pttl_ms: int        # WAIT: how long the lease has left


def _acquired(reply: Any) -> Acquired:
    status = AcquireStatus(int(reply[0]))
    value = reply[1] or None
    if status is AcquireStatus.LOAD:
        return Acquired(status, value, _text(reply[2]), 0)
    return Acquired(status, value, "", int(reply[2]) if status is AcquireStatus.WAIT else 0)


def acquire(layout: KeyLayout, *, key: str, tags: Sequence[str], token: str, lease_ms: int) -> Call[Acquired]:
    return Call(script("acquire"),
                [layout.value(key), layout.lease(key), layout.waiters(key), layout.fence(key),
                 *(layout.tag_gen(t) for t in tags)],
                [token, lease_ms, len(tags)], _acquired)


class WriteStatus(Enum):
    WRITTEN = 1
    REJECTED = 0    # fenced (an invalidation since the token was taken) or an older version


def write(layout: KeyLayout, *, key: str, tags: Sequence[str], envelope: str | bytes, px: int, fence: str,
          lease_token: str, version: int | None, fence_ttl: int, bump: bool) -> Call[WriteStatus]:
    """`fence` "*" writes unfenced; `bump` (a writer's set) fences every load of the key in flight."""
    return Call(script("write"),
                [layout.value(key), layout.fence(key), layout.lease(key), layout.wake(key), layout.waiters(key),
                 *(layout.tag_gen(t) for t in tags), *(layout.tag(t) for t in tags)],
                [fence, envelope, max(px, 1), lease_token, "" if version is None else version, len(tags), key,
                 fence_ttl, "1" if bump else "0"],
                lambda reply: WriteStatus(int(reply)))


def release(layout: KeyLayout, *, key: str, lease_token: str) -> Call[None]:
    return Call(script("release"), [layout.lease(key), layout.wake(key), layout.waiters(key)], [lease_token],
                lambda reply: None)


class InvalidateStatus(Enum):
    APPLIED = 1
    STALE = 0       # the cache already holds the event's version or a newer one


class Invalidated(NamedTuple):
    status: InvalidateStatus
    deleted: bool


def invalidate_key(layout: KeyLayout, *, key: str, version: int | None, fence_ttl: int) -> Call[Invalidated]:
    return Call(script("invalidate_key"), [layout.value(key), layout.fence(key)],
                ["" if version is None else version, fence_ttl],
                lambda reply: Invalidated(InvalidateStatus(int(reply[0])), bool(int(reply[1]))))


class TagBatch(NamedTuple):
    """A step of a tag invalidation: members dropped by it, and the next members to drop (none: done)."""

    dropped: int
    members: list[bytes]


def tag_bump(layout: KeyLayout, *, tag: str, fence_ttl: int, batch: int) -> Call[TagBatch]:
    """Fences every load in flight of the tag's keys; returns the first members to drain."""
    return Call(script("tag_bump"), [layout.tag_gen(tag), layout.tag(tag)], [fence_ttl, batch],
                lambda reply: TagBatch(0, list(reply[1])))


def tag_drain(layout: KeyLayout, *, tag: str, members: Sequence[bytes], fence_ttl: int,
              batch: int) -> Call[TagBatch]:
    """Invalidates `members` (as read by the previous step) and removes them from the tag's set."""
    value_prefix, fence_prefix = layout.value_prefix.encode(), layout.fence_prefix.encode()
    keys: list[str | bytes] = [layout.tag(tag)]
    for member in members:
        keys += [value_prefix + member, fence_prefix + member]
    return Call(script("tag_drain"), keys, [fence_ttl, batch, *members],
                lambda reply: TagBatch(int(reply[0]), list(reply[1])))


# ---- the refresh path (refresh.py, scan.py, hotkeys.py, ratelimit.py) --------------------------------------------
class LeaseStatus(Enum):
    TAKEN = 1
    NOT_DUE = 2     # fresh enough: another refresh or a reader got there first
    HELD = 3        # someone else holds the key's lease


class Leased(NamedTuple):
    status: LeaseStatus
    fence: str = ""
    late: bool = False          # the value had expired (or was missing)
    wasted: bool = False        # nobody read the key since its previous refresh
    had_value: bool = False
    owner: str | None = None    # HELD: the worker holding it, when a worker does


def _leased(reply: Any) -> Leased:
    status = LeaseStatus(int(reply[0]))
    if status is LeaseStatus.TAKEN:
        return Leased(status, _text(reply[1]), bool(int(reply[2])), bool(int(reply[3])), bool(int(reply[4])))
    owner = reply[1] if status is LeaseStatus.HELD and len(reply) > 1 else None
    return Leased(status, owner=_text(owner) if owner else None)


def lease(layout: KeyLayout, *, key: str, keyspace: str, tags: Sequence[str], token: str, lease_ms: int,
          ahead_ms: int | None, suspect: str | None = None) -> Call[Leased]:
    """`ahead_ms` None: due anyway. `suspect`: a worker (named by a HELD reply) whose lease is taken over when its
    heartbeat key is gone."""
    keys = [layout.value(key), layout.lease(key), layout.fence(key), layout.seen(keyspace), layout.hot(keyspace),
            *(layout.tag_gen(t) for t in tags)]
    if suspect is not None:
        keys.append(layout.worker(suspect))
    return Call(script("lease"), keys,
                [token, lease_ms, len(tags), "" if ahead_ms is None else ahead_ms, key, suspect or ""], _leased)


class RemoveStatus(Enum):
    REMOVED = 1
    FENCED = 0


def remove(layout: KeyLayout, *, key: str, keyspace: str, tags: Sequence[str], fence: str,
           lease_token: str) -> Call[RemoveStatus]:
    return Call(script("remove"),
                [layout.value(key), layout.fence(key), layout.lease(key), layout.wake(key), layout.waiters(key),
                 layout.hot(keyspace), layout.pinned(keyspace), layout.seen(keyspace),
                 *(layout.tag_gen(t) for t in tags)],
                [fence, lease_token, key, len(tags)], lambda reply: RemoveStatus(int(reply)))


class DueKeys(NamedTuple):
    now_ms: int
    due: list[tuple[int, str]]      # (refresh_at ms, 0 when missing; key)


def due(layout: KeyLayout, *, keys: Sequence[str], ahead_ms: int) -> Call[DueKeys]:
    def decode(reply: Any) -> DueKeys:
        return DueKeys(int(reply[0]), [(int(reply[i + 1]), keys[int(reply[i]) - 1]) for i in range(1, len(reply), 2)])
    return Call(script("due"), [layout.value(k) for k in keys], [ahead_ms], decode)


def claim(layout: KeyLayout, *, keys: Sequence[str], claim_ms: int) -> Call[list[str]]:
    """Returns the keys whose claim this call took."""
    return Call(script("claim"), [layout.claim(k) for k in keys], [claim_ms],
                lambda reply: [keys[int(i) - 1] for i in reply])


def unlock(*, lock_key: str, token: str) -> Call[bool]:
    return Call(script("unlock"), [lock_key], [token], lambda reply: bool(int(reply)))


@dataclass(frozen=True, slots=True)
class HotSet:
    """One keyspace's keys worth keeping warm, read at `now_ms` (Redis's clock)."""

    now_ms: int
    hot: list[str]
    pinned: list[str]

    def keys(self) -> list[str]:
        """Hot and pinned keys, each once, hot first."""
        return list(dict.fromkeys([*self.hot, *self.pinned]))


def _hotset(reply: Any) -> HotSet:
    items = [_text(item) for item in reply]
    split = items.index("", 1)
    return HotSet(int(items[0]), items[1:split], items[split + 1:])


def hotset(layout: KeyLayout, *, keyspace: str, threshold: float, half_life_ms: int,
           cold_factor: float) -> Call[HotSet]:
    return Call(script("hotset"),
                [layout.hot(keyspace), layout.hot_epoch(keyspace), layout.pinned(keyspace), layout.seen(keyspace)],
                [repr(threshold), half_life_ms, repr(cold_factor)], _hotset)


def take(*, bucket: str, rate: float, burst: float) -> Call[int]:
    """One token of a rate budget: 0 when taken, else the milliseconds until one is available."""
    return Call(script("take"), [bucket], [repr(rate), repr(burst)], int)


def flush(layout: KeyLayout, *, half_life_ms: int, rebase_half_lives: int, counters: dict[str, float],
          reads: dict[str, dict[str, int]], limits: dict[str, int]) -> Call[None]:
    """The read counters of a process, and each keyspace's reads per key (its hot set trimmed to its limit)."""
    keys = [layout.stats]
    args: list[str | bytes | int | float] = [half_life_ms, rebase_half_lives, len(counters)]
    for field, delta in counters.items():
        args += [field, int(delta) if float(delta).is_integer() else repr(delta)]
    for keyspace, per_key in reads.items():
        keys += [layout.hot(keyspace), layout.hot_epoch(keyspace)]
        args += [limits.get(keyspace, 100_000), len(per_key)]
        for key, n in per_key.items():
            args += [key, n]
    return Call(script("flush"), keys, args, lambda reply: None)


# ---- invalidation stream gaps (invalidation/gap.py) --------------------------------------------------------------
class GapCheck(NamedTuple):
    upper: str | None       # upper id of a newly found gap
    lost: int               # entries lost, -1 when Redis cannot tell
    last_id: str            # the stream's last generated id
    read: Any               # the XREADGROUP reply


def check_and_read(layout: KeyLayout, *, stream: str, group: str, consumer: str, count: int, now_ms: int,
                   acks: Sequence[str]) -> Call[GapCheck]:
    return Call(script("check_and_read"), [stream, layout.invalidation_gap()], [group, consumer, count, now_ms, *acks],
                lambda r: GapCheck(_text(r[0]) if r[0] else None, int(r[1]), _text(r[2]), r[3]))


def record_gap(layout: KeyLayout, *, upper: str, now_ms: int, consumer: str, force: bool) -> Call[bool]:
    """True when recorded; False when an answer already covers it (never with `force`)."""
    return Call(script("record_gap"), [layout.invalidation_gap()], [upper, now_ms, consumer, "1" if force else "0"],
                lambda reply: bool(int(reply)))


def gap_answered(layout: KeyLayout, *, upper: str, dropped: int) -> Call[None]:
    return Call(script("gap_answered"), [layout.invalidation_gap(), layout.refresh_stats], [upper, dropped],
                lambda reply: None)


def drop(layout: KeyLayout, *, names: Sequence[bytes], fence_ttl: int) -> Call[list[bytes]]:
    """Drops what a SCAN batch of names holds: values (fenced, deleted), loads in flight (their lease: fenced),
    tags (a generation, or a member set: the generation bumped). Returns the cache keys whose value was deleted."""
    value_p, lease_p = layout.value_prefix.encode(), layout.lease_prefix.encode()
    gen_p, set_p, fence_p = layout.tag_gen_prefix.encode(), layout.tag_prefix.encode(), layout.fence_prefix.encode()
    values: list[bytes] = []
    fences: list[bytes] = []
    gens: dict[bytes, None] = {}
    for name in names:
        if name.startswith(value_p):
            values.append(name[len(value_p):])
        elif name.startswith(lease_p):
            fences.append(fence_p + name[len(lease_p):])
        elif name.startswith(gen_p):
            gens.setdefault(name)
        elif name.startswith(set_p):
            gens.setdefault(gen_p + name[len(set_p):])
    keys: list[str | bytes] = []
    for key in values:
        keys += [value_p + key, fence_p + key]
    return Call(script("drop"), [*keys, *fences, *gens], [fence_ttl, len(values), len(fences)],
                lambda reply: [values[int(i) - 1] for i in reply])
