"""The scan: which hot or pinned keys are due for a refresh, claimed so that each is enqueued once per period.

For each keyspace it reads the hot set (hotkeys.py) and the expiry header of each candidate's value (GETRANGE of 13
bytes, inside a script, a few thousand keys per call), so its cost grows with the hot set, never with the keyspace.
A key is due when it is missing or less than `refresh_ahead` of freshness remains. Each due key is claimed with
``claim:K`` (SET NX PX); only keys whose claim this scan won are returned, so two beats by mistake, or a scan
overlapping the previous one, enqueue a key once. The refresh deletes the claim when it is done (whatever the
outcome), and the claim's TTL frees keys whose worker died, so a killed batch is picked up again within a few scan
periods. A scan lock (``scan:lock``) keeps a second concurrent scan from doing the same work; the claims alone keep
it correct.

Gauges written to ``refresh:stats`` per keyspace: ``hot_keys:S`` (hot + pinned), ``backlog_keys:S`` (due now,
claimed or not: enqueued but not refreshed yet counts too), ``backlog_seconds:S`` (how far past its refresh time,
expiry - refresh_ahead, the most overdue key is).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import redis

from ..config.keyspaces import KeyspaceRegistry
from ..redis_layer import script_calls, scripts
from ..redis_layer.keys import KeyLayout
from ..settings import Settings
from .claims import chunked
from .hotkeys import hot_set


@dataclass
class KeyspaceScan:
    hot_keys: int = 0
    due: int = 0
    claimed: int = 0
    backlog_seconds: float = 0.0


@dataclass
class ScanResult:
    """What a scan found: batches of claimed keys (one keyspace per batch) and per-keyspace figures."""

    ran: bool
    batches: list[list[str]] = field(default_factory=list)
    keyspaces: dict[str, KeyspaceScan] = field(default_factory=dict)


def claim_ms(settings: Settings) -> int:
    """How long a claim lives: a few scan periods (enough for the batch to be picked up and run)."""
    return max(1000, int(settings.scan_interval * 4000))


def lock_ms(settings: Settings) -> int:
    return max(2000, int(settings.scan_interval * 5000))


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def scan(client: redis.Redis, settings: Settings, keyspaces: KeyspaceRegistry | None = None, *,
         batch_size: int | None = None, max_keys: int | None = None) -> ScanResult:
    """One scan of every keyspace; returns the batches to enqueue (empty when another scan holds the lock).

    `max_keys` caps what this scan claims (the caller's room in the refresh queue): the most read keys are
    claimed first (`priority`), the others wait for a later scan, so a backlog never floods the queue with work
    whose claims would lapse before it runs."""
    registry = keyspaces if keyspaces is not None else settings.keyspaces
    layout = KeyLayout(settings.key_prefix)
    token = secrets.token_hex(8)
    if not client.set(layout.scan_lock, token, nx=True, px=lock_ms(settings)):
        return ScanResult(ran=False)
    try:
        result = ScanResult(ran=True)
        size = batch_size or settings.refresh_batch_size
        gauges: dict[str, float] = {}
        room = max_keys
        for ks in registry:
            figures, claimed = _scan_keyspace(client, layout, settings, ks.name, int(ks.refresh_ahead * 1000),
                                              room)
            if room is not None:
                room = max(0, room - len(claimed))
            result.keyspaces[ks.name] = figures
            result.batches.extend(_chunks(claimed, size))
            gauges[f"hot_keys:{ks.name}"] = figures.hot_keys
            gauges[f"backlog_keys:{ks.name}"] = figures.due
            gauges[f"backlog_seconds:{ks.name}"] = round(figures.backlog_seconds, 3)
        if gauges:
            client.hset(layout.refresh_stats, mapping=gauges)  # type: ignore[arg-type]
        return result
    finally:
        scripts.run(client, script_calls.unlock(lock_key=layout.scan_lock, token=token))


def _scan_keyspace(client: redis.Redis, layout: KeyLayout, settings: Settings, keyspace: str,
                   ahead_ms: int, room: int | None) -> tuple[KeyspaceScan, list[str]]:
    hs = hot_set(client, layout, keyspace, threshold=settings.hot_threshold, half_life=settings.hot_half_life)
    candidates = hs.keys()
    figures = KeyspaceScan(hot_keys=len(candidates))
    due: list[tuple[int, str]] = []   # due and not claimed yet
    claimed_due = 0
    for found in chunked(client, candidates, lambda keys: script_calls.due(layout, keys=keys, ahead_ms=ahead_ms), 2,
                         layout.value):
        due += found.due
        claimed_due += found.claimed
        oldest = min((at for at, _ in found.due if at), default=0)
        if found.claimed_oldest:
            oldest = min(oldest or found.claimed_oldest, found.claimed_oldest)
        if oldest:
            figures.backlog_seconds = max(figures.backlog_seconds, (found.now_ms - oldest) / 1000)
    figures.due = len(due) + claimed_due
    due.sort(key=priority(hs.reads))
    wanted = [key for _, key in due]
    claimed: list[str] = []
    ttl = claim_ms(settings)
    # Due keys already claimed (waiting in the queue, or being refreshed) take no room and are not in `wanted` (the
    # due test leaves them out): with a cap, claim in order until the room is filled or every due key was tried
    # (a round trip per round; more than one only when keys were claimed meanwhile, by another scan).
    start = 0
    while start < len(wanted) and (room is None or len(claimed) < room):
        end = len(wanted) if room is None else start + room - len(claimed)
        for took in chunked(client, wanted[start:end],
                            lambda keys: script_calls.claim(layout, keys=keys, claim_ms=ttl), 1, layout.claim):
            claimed += took
        start = end
    figures.claimed = len(claimed)
    return figures, claimed


def priority(reads: dict[str, float]) -> Callable[[tuple[int, str]], tuple[float, int]]:
    """The order due keys are claimed and sent in: the most read first (decayed read count; a pinned key that is
    not hot counts as the hottest), then the most overdue (missing first). When the workers cannot keep up, the
    room in the queue goes to the keys read soonest; a key rarely read waits (its refresh is likely wasted)."""
    def order(item: tuple[int, str]) -> tuple[float, int]:
        refresh_at, key = item
        count = reads.get(key, math.inf)
        return -float(f"{count:.2g}"), refresh_at  # counts within a few % (shards read ms apart) are equal
    return order
