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
expiry - refresh_ahead, the most overdue key is). Refresh by value (value.py) sets which keys are candidates:
the hot set's bound is the worth test's (gauges ``worth_bound:S``, decayed reads, and ``miss_cost_ms:S``); a
keyspace's `refresh_budget` (budget.py) caps what a scan claims, most valuable first (``left_out:S``,
``left_out_keys:S``).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from ..config.keyspaces import Keyspace, KeyspaceRegistry
from ..redis_layer import script_calls, scripts
from ..redis_layer.keys import KeyLayout
from ..redis_layer.script_calls import HotSet
from ..settings import Settings
from . import budget
from .claims import chunked
from .hotkeys import COLD_FACTOR, hot_set
from .value import measured_miss_cost, policy_for


@dataclass
class KeyspaceScan:
    hot_keys: int = 0
    due: int = 0
    claimed: int = 0
    backlog_seconds: float = 0.0
    waiting: int = 0      # due, not claimed before, and not claimed by this scan
    left_out: int = 0     # of those, the keys the refresh budget left out
    worth_bound: float = 0.0


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
        left_out: dict[str, int] = {}
        room = max_keys
        stats = _decoded(client.hgetall(layout.refresh_stats)) if len(registry) else {}
        for ks in registry:
            figures, claimed = _scan_keyspace(client, layout, settings, ks, stats, room, gauges)
            if room is not None:
                room = max(0, room - len(claimed))
            result.keyspaces[ks.name] = figures
            result.batches.extend(_chunks(claimed, size))
            gauges[f"hot_keys:{ks.name}"] = figures.hot_keys
            gauges[f"backlog_keys:{ks.name}"] = figures.due
            gauges[f"backlog_seconds:{ks.name}"] = round(figures.backlog_seconds, 3)
            gauges[f"worth_bound:{ks.name}"] = round(figures.worth_bound, 4)
            if ks.config.refresh_budget is not None:
                gauges[f"left_out_keys:{ks.name}"] = figures.left_out
                left_out[ks.name] = figures.left_out
        if gauges:
            pipe = client.pipeline(transaction=False)
            pipe.hset(layout.refresh_stats, mapping=gauges)  # type: ignore[arg-type]
            for name, count in left_out.items():
                if count:
                    pipe.hincrby(layout.refresh_stats, f"left_out:{name}", count)
            pipe.execute()
        return result
    finally:
        scripts.run(client, script_calls.unlock(lock_key=layout.scan_lock, token=token))


def _decoded(raw: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in raw.items():
        try:
            out[name.decode() if isinstance(name, bytes) else str(name)] = float(value)
        except ValueError:
            continue
    return out


def _scan_keyspace(client: redis.Redis, layout: KeyLayout, settings: Settings, ks: Keyspace,
                   stats: dict[str, float], room: int | None,
                   gauges: dict[str, float]) -> tuple[KeyspaceScan, list[str]]:
    """The keyspace's due keys worth refreshing, claimed most valuable first within `room` and its budget (the
    budget's bucket and the miss cost go into `gauges`)."""
    keyspace, cfg = ks.name, ks.config
    policy = policy_for(refresh_worth=cfg.refresh_worth, miss_cost=cfg.miss_cost,
                        measured=measured_miss_cost(stats, keyspace), ttl=cfg.ttl, refresh_ahead=cfg.refresh_ahead,
                        half_life=settings.hot_half_life, floor=settings.hot_threshold)
    gauges[f"miss_cost_ms:{keyspace}"] = round(policy.miss_cost * 1000, 3)
    hs = hot_set(client, layout, keyspace, threshold=policy.bound(), half_life=settings.hot_half_life,
                 cold_below=settings.hot_threshold / COLD_FACTOR)
    tokens: float | None = None
    if cfg.refresh_budget is not None:
        tokens = budget.refill(stats, keyspace, budget=cfg.refresh_budget, scan_interval=settings.scan_interval,
                               now_ms=hs.now_ms)
        room = int(tokens) if room is None else min(room, int(tokens))
    figures, claimed = _claim_due(client, layout, settings, hs, int(cfg.refresh_ahead * 1000), room)
    figures.worth_bound = policy.bound()
    if tokens is not None:
        gauges.update(budget.spent(keyspace, tokens, len(claimed), hs.now_ms))
        if int(tokens) == room:  # the budget, not the queue's room, was the cap: what waits was left out by it
            figures.left_out = figures.waiting
    return figures, claimed


def _claim_due(client: redis.Redis, layout: KeyLayout, settings: Settings, hs: HotSet, ahead_ms: int,
               room: int | None) -> tuple[KeyspaceScan, list[str]]:
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
    figures.waiting = len(wanted) - len(claimed)
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
