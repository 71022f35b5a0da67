"""One typed function per Lua script: keyword arguments in, a `Call` out whose reply decodes to a named result.

Every key a script touches is built here from the `KeyLayout` and passed in KEYS (so a Redis ACL key pattern, and
Redis Cluster, see them all); scripts that work on members read elsewhere (a tag's set, a SCAN batch) get those
members' keys in KEYS too. Send a call with scripts.run / arun / execute / aexecute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

import redis.exceptions

from .keys import HOT_SHARDS, KeyLayout, shard_of
from .scripts import Call, script


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


# ---- the read path and writes (keys.py, lua/) --------------------------------------------------------------------
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


FENCE_KEEP_MS = 600_000  # how long a fence made by a token is kept when the caller does not say


def acquire(layout: KeyLayout, *, key: str, token: str, lease_ms: int,
            fence_keep_ms: int = FENCE_KEEP_MS) -> Call[Acquired]:
    """A tagged key must be enlisted (`enlist`) before this call: see keys.py. A missing fence is made, with a
    generation from Redis's clock, and kept `fence_keep_ms` (about the value's life): see lua/preamble.lua."""
    return Call(script("acquire"),
                [layout.value(key), layout.lease(key), layout.waiters(key), layout.fence(key)],
                [token, lease_ms, max(fence_keep_ms, 1)], _acquired)


def enlist(layout: KeyLayout, *, tag: str, key: str, keep_ms: int) -> Call[None]:
    """Keeps key in tag's member set for keep_ms (before a load reads its fence token, and with its write)."""
    return Call(script("enlist"), [layout.tag(tag)], [key, max(keep_ms, 1)], lambda reply: None)


class WriteStatus(Enum):
    WRITTEN = 1
    REJECTED = 0    # fenced (an invalidation since the token was taken) or an older version


class WriteItem(NamedTuple):
    """One key's part of a WRITE of many (`write_many`)."""

    key: str
    envelope: str | bytes
    px: int
    fence: str
    lease_token: str
    version: int | None


def write(layout: KeyLayout, *, key: str, envelope: str | bytes, px: int, fence: str, lease_token: str,
          version: int | None, fence_ttl: int, bump: bool) -> Call[WriteStatus]:
    """`fence` "*" writes unfenced; `bump` (a writer's set) fences every load of the key in flight. A tagged key
    is enlisted again (`enlist`) in the same pipeline."""
    many = write_many(layout, [WriteItem(key, envelope, px, fence, lease_token, version)], fence_ttl=fence_ttl,
                      bump=bump)
    return Call(many.script, many.keys, many.args, lambda reply: WriteStatus(int(reply[0])))


def write_many(layout: KeyLayout, items: Sequence[WriteItem], *, fence_ttl: int,
               bump: bool = False) -> Call[list[WriteStatus]]:
    """WRITE of several keys in one script call: each as `write` alone would, the replies in order. Several keys
    are several slots: on a Redis Cluster only through node_calls.on_node (keys of one node)."""
    keys: list[str | bytes] = []
    args: list[str | bytes | int | float] = [fence_ttl, "1" if bump else "0"]
    value_prefix, fence_prefix, lease_prefix = layout.value_prefix, layout.fence_prefix, layout.lease_prefix
    wake_prefix, waiters_prefix = layout.wake_prefix, layout.waiters_prefix
    for key, envelope, px, fence, lease_token, version in items:
        tail = key + "}"
        keys += (value_prefix + tail, fence_prefix + tail, lease_prefix + tail, wake_prefix + tail,
                 waiters_prefix + tail)
        args += (fence, envelope, max(px, 1), lease_token, "" if version is None else version)
    return Call(script("write"), keys, args, lambda reply: [WriteStatus(int(r)) for r in reply])


def release(layout: KeyLayout, *, key: str, lease_token: str) -> Call[None]:
    return Call(script("release"), [layout.lease(key), layout.wake(key), layout.waiters(key)], [lease_token],
                lambda reply: None)


class InvalidateStatus(Enum):
    APPLIED = 1
    STALE = 0       # the cache already holds the event's version or a newer one


class Invalidated(NamedTuple):
    status: InvalidateStatus
    deleted: bool


def _invalidated(reply: Any) -> Invalidated:
    return Invalidated(InvalidateStatus(int(reply[0])), bool(int(reply[1])))


def _invalidated_or_error(reply: Any) -> Invalidated | redis.exceptions.ResponseError:
    if int(reply[0]) < 0:  # this key's commands failed (the others' did not)
        return redis.exceptions.ResponseError(_text(reply[1]))
    return _invalidated(reply)


def invalidate_key(layout: KeyLayout, *, key: str, version: int | None, fence_ttl: int) -> Call[Invalidated]:
    many = invalidate_many(layout, [(key, version)], fence_ttl=fence_ttl)
    return Call(many.script, many.keys, many.args, lambda reply: _invalidated(reply[0]))


def invalidate_many(layout: KeyLayout, items: Sequence[tuple[str, int | None]], *,
                    fence_ttl: int) -> Call[list[Invalidated | redis.exceptions.ResponseError]]:
    """One INVALIDATE_KEY of many (key, version) items, applied in order (on a Redis Cluster: node_calls.on_node);
    per item its outcome, or the error of its commands in its place (the other items are applied all the same)."""
    keys: list[str] = []
    args: list[Any] = [fence_ttl]
    for key, version in items:
        keys += (layout.value(key), layout.fence(key))
        args.append("" if version is None else version)
    return Call(script("invalidate_key"), keys, args, lambda reply: [_invalidated_or_error(r) for r in reply])


class TagStep(NamedTuple):
    """A step of a tag invalidation's walk: members to invalidate, and the cursor of the next step ("0": done)."""

    cursor: str
    members: list[bytes]


def tag_members(layout: KeyLayout, *, tag: str, cursor: str, count: int) -> Call[TagStep]:
    return Call(script("tag_members"), [layout.tag(tag)], [cursor, count],
                lambda reply: TagStep(_text(reply[0]), list(reply[1:])))


# ---- the refresh path (refresh.py, scan.py, hotkeys.py, ratelimit.py) --------------------------------------------
class LeaseStatus(Enum):
    TAKEN = 1
    NOT_DUE = 2     # fresh enough: another refresh or a reader got there first
    HELD = 3        # someone else holds the key's lease


class Leased(NamedTuple):
    status: LeaseStatus
    fence: str = ""
    late: bool = False          # the value had expired (or was missing)
    had_value: bool = False
    owner: str | None = None    # HELD: the worker holding it, when a worker does


def _leased(reply: Any) -> Leased:
    status = LeaseStatus(int(reply[0]))
    if status is LeaseStatus.TAKEN:
        return Leased(status, _text(reply[1]), bool(int(reply[2])), bool(int(reply[3])))
    owner = reply[1] if status is LeaseStatus.HELD and len(reply) > 1 else None
    return Leased(status, owner=_text(owner) if owner else None)


def lease(layout: KeyLayout, *, key: str, token: str, lease_ms: int, ahead_ms: int | None,
          suspect: str | None = None, fence_keep_ms: int = FENCE_KEEP_MS) -> Call[Leased]:
    """`ahead_ms` None: due anyway. `suspect`: a worker (named by a HELD reply) whose heartbeat key the caller
    found gone: its lease is taken over. A tagged key must be enlisted (`enlist`) before this call."""
    many = lease_many(layout, [(key, token)], lease_ms=lease_ms, ahead_ms=ahead_ms, suspect=suspect,
                      fence_keep_ms=fence_keep_ms)
    return Call(many.script, many.keys, many.args, lambda reply: _leased(reply[0]))


def lease_many(layout: KeyLayout, items: Sequence[tuple[str, str]], *, lease_ms: int, ahead_ms: int | None,
               suspect: str | None = None, fence_keep_ms: int = FENCE_KEEP_MS) -> Call[list[Leased]]:
    """LEASE of several keys, each `(key, token)`, in one script call: each as `lease` alone would, the replies
    in order. One key per call on a Redis Cluster (several keys are several slots)."""
    keys: list[str | bytes] = []
    args: list[str | bytes | int | float] = [lease_ms, "" if ahead_ms is None else ahead_ms, suspect or "",
                                             "1" if suspect is not None else "", max(fence_keep_ms, 1)]
    value_prefix, lease_prefix, fence_prefix = layout.value_prefix, layout.lease_prefix, layout.fence_prefix
    for key, token in items:
        tail = key + "}"
        keys += (value_prefix + tail, lease_prefix + tail, fence_prefix + tail)
        args.append(token)
    return Call(script("lease"), keys, args, lambda reply: [_leased(r) for r in reply])


def seen(layout: KeyLayout, *, key: str, keyspace: str) -> Call[bool]:
    """Records the key's popularity at this refresh; True when it is unchanged since the previous one (wasted)."""
    many = seen_many(layout, [(key, keyspace)])
    return Call(many.script, many.keys, many.args, lambda reply: bool(int(reply[0])))


def seen_many(layout: KeyLayout, items: Sequence[tuple[str, str]]) -> Call[list[bool]]:
    """SEEN of several keys, each `(key, keyspace)`, in one script call: each as `seen` alone would, the replies in
    order. Keys of several shards are several slots: on a Redis Cluster through node_calls.on_node."""
    keys: list[str | bytes] = []
    for key, keyspace in items:
        shard = shard_of(key)
        keys += (layout.hot(keyspace, shard), layout.seen(keyspace, shard))
    return Call(script("seen"), keys, [key for key, _ in items], lambda reply: [bool(int(r)) for r in reply])


def forget(layout: KeyLayout, *, key: str, keyspace: str) -> Call[None]:
    """Drops a key's popularity (the source no longer has it)."""
    shard = shard_of(key)
    return Call(script("forget"), [layout.hot(keyspace, shard), layout.seen(keyspace, shard)], [key],
                lambda reply: None)


class RemoveStatus(Enum):
    REMOVED = 1
    FENCED = 0


def remove(layout: KeyLayout, *, key: str, fence: str, lease_token: str) -> Call[RemoveStatus]:
    """Removes the value (fenced); the caller then calls `forget` and unpins the key."""
    return Call(script("remove"),
                [layout.value(key), layout.fence(key), layout.lease(key), layout.wake(key), layout.waiters(key)],
                [fence, lease_token], lambda reply: RemoveStatus(int(reply)))


class DueKeys(NamedTuple):
    now_ms: int
    due: list[tuple[int, str]]      # not claimed yet: (refresh_at ms, 0 when missing; key)
    claimed: int = 0                # due and already claimed (queued or being refreshed)
    claimed_oldest: int = 0         # the oldest refresh_at among those (0: none, or all missing)


def due(layout: KeyLayout, *, keys: Sequence[str], ahead_ms: int) -> Call[DueKeys]:
    """The due keys among `keys`; those already claimed only counted (a scan has nothing to do with them: their
    claim is the previous scan's, or a refresh's in flight)."""
    def decode(reply: Any) -> DueKeys:
        due = [(int(at), keys[int(i) - 1]) for i, at in zip(reply[3::2], reply[4::2], strict=True)]
        return DueKeys(int(reply[0]), due, int(reply[1]), int(reply[2]))
    value_prefix, claim_prefix = layout.value_prefix, layout.claim_prefix
    names: list[str | bytes] = []
    for key in keys:
        tail = key + "}"
        names += (value_prefix + tail, claim_prefix + tail)
    return Call(script("due"), names, [ahead_ms], decode)


def claim(layout: KeyLayout, *, keys: Sequence[str], claim_ms: int) -> Call[list[str]]:
    """Returns the keys whose claim this call took."""
    return Call(script("claim"), [layout.claim(k) for k in keys], [claim_ms],
                lambda reply: [keys[int(i) - 1] for i in reply])


def unclaim(layout: KeyLayout, *, keys: Sequence[str]) -> Call[None]:
    """Deletes the claims of `keys` (a batch done); of several slots only through node_calls.on_node."""
    return Call(script("unclaim"), [layout.claim(k) for k in keys], [], lambda reply: None)


def unlock(*, lock_key: str, token: str) -> Call[bool]:
    return Call(script("unlock"), [lock_key], [token], lambda reply: bool(int(reply)))


@dataclass(frozen=True, slots=True)
class HotSet:
    """One keyspace's keys worth keeping warm, read at `now_ms` (Redis's clock): hot keys hottest first, with
    their decayed read counts (`reads`), and the pinned keys."""

    now_ms: int
    hot: list[str]
    pinned: list[str]
    reads: dict[str, float] = field(default_factory=dict)

    def keys(self) -> list[str]:
        """Hot and pinned keys, each once, hot first."""
        return list(dict.fromkeys([*self.hot, *self.pinned]))


def _hot_shard(reply: Any) -> HotSet:
    items = [_text(item) for item in reply]
    reads = {items[i]: float(items[i + 1]) for i in range(1, len(items) - 1, 2)}
    return HotSet(int(items[0]), list(reads), [], reads)


def hotset(layout: KeyLayout, *, keyspace: str, shard: int, threshold: float, half_life_ms: int,
           cold_factor: float) -> Call[HotSet]:
    """One shard's hot keys (no pins: the caller reads `pin:S` beside it)."""
    return Call(script("hotset"),
                [layout.hot(keyspace, shard), layout.hot_epoch(keyspace, shard), layout.seen(keyspace, shard)],
                [repr(threshold), half_life_ms, repr(cold_factor)], _hot_shard)


def hot_members(layout: KeyLayout, *, keyspace: str, shard: int, keys: Sequence[str], threshold: float,
                half_life_ms: int) -> Call[list[bool]]:
    """Whether each key (all of one hot-set shard) is hot now, by HOTSET's rule (is_hot, lua/preamble.lua)."""
    return Call(script("hot_members"), [layout.hot(keyspace, shard), layout.hot_epoch(keyspace, shard)],
                [repr(threshold), half_life_ms, *keys], lambda reply: [bool(int(flag)) for flag in reply])


def take(*, bucket: str, rate: float, burst: float) -> Call[int]:
    """One token of a rate budget: 0 when taken, else the milliseconds until one is available."""
    return Call(script("take"), [bucket], [repr(rate), repr(burst)], int)


def flush(layout: KeyLayout, *, half_life_ms: int, rebase_half_lives: int, reads: dict[str, dict[str, int]],
          limits: dict[str, int]) -> list[Call[None]]:
    """Each keyspace's reads per key, one call per hot-set shard read (each shard trimmed to its share of the
    keyspace's limit). The read counters go beside them as plain HINCRBYFLOATs (access.py)."""
    calls: list[Call[None]] = []
    for keyspace, per_key in reads.items():
        shards: dict[int, list[str | bytes | int | float]] = {}
        for key, n in per_key.items():
            shards.setdefault(shard_of(key), []).extend((key, n))
        limit = max(1, limits.get(keyspace, 100_000) // HOT_SHARDS)  # the keyspace's bound, split evenly
        for shard, pairs in shards.items():
            calls.append(Call(script("flush"), [layout.hot(keyspace, shard), layout.hot_epoch(keyspace, shard)],
                              [half_life_ms, rebase_half_lives, limit, *pairs], lambda reply: None))
    return calls


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


def gap_answered(layout: KeyLayout, *, upper: str) -> Call[None]:
    return Call(script("gap_answered"), [layout.invalidation_gap()], [upper], lambda reply: None)
