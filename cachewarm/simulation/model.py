"""A model of one keyspace's cache under cachewarm: reads replayed through TTLs, misses, the scan and its refreshes.

What it keeps of the live system (docs/ARCHITECTURE.md, the refresh path):
- popularity: each read adds 2^((t - epoch) / half_life) to the key's score (popularity.py); a key that decayed
  below hot_threshold / COLD_FACTOR was dropped by a scan and starts again from its next read (hotkeys.py);
- a read hits when the value is fresh; otherwise it misses and, unless a load or a refresh of the key is in
  flight (single flight: it waits for that one), loads it from the source, which takes `latency`;
- a scan every `scan_interval`: keys whose freshness ends within `refresh_ahead` (or that are missing) and that are
  worth a refresh (value.py: decayed reads above the bound) are refreshed, most read first, within the refresh
  budget's bucket (budget.py); a refresh starts `dispatch` after the scan and writes `latency` later, the value
  then fresh for `ttl`; readers in between are served the old value while it is fresh, else wait (a miss);
- wasted: a refresh of a key nobody read since its previous refresh (refresh.py's SEEN).
What it leaves out: workers' capacity and the broker (refreshes never queue), pins, invalidations, failures.

`oracle` replaces each key's decayed count by its true one (its true read rate * half_life / ln 2): the policy
that knows the rates, the reference line of `cachewarm simulate`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..warming.budget import burst
from ..warming.hotkeys import COLD_FACTOR
from ..warming.value import LN2, ValuePolicy, refresh_period

INF = math.inf
RESCALE_AT = 400.0  # half-lives past the epoch before the scores are rescaled (2^400 stays a finite float)


@dataclass(frozen=True)
class Params:
    """One keyspace's settings as the model uses them."""

    ttl: float
    refresh_ahead: float
    latency: float                 # seconds a source request takes (a miss's load, a refresh's fetch)
    refresh_worth: float
    miss_cost: float               # what value.py prices a refresh with (the measured latency by default)
    refresh_budget: float | None   # for the keys in the trace (a sampled trace: the budget * the sample share)
    half_life: float
    floor: float                   # CACHEWARM_HOT_THRESHOLD
    scan_interval: float
    dispatch: float = 0.02         # seconds from a scan's claim to the refresh's source request

    def policy(self) -> ValuePolicy:
        return ValuePolicy(self.refresh_worth, self.miss_cost, refresh_period(self.ttl, self.refresh_ahead),
                           self.half_life, self.floor)


@dataclass
class Figures:
    """What happened over the measured window (reads at or after `since`)."""

    seconds: float = 0.0
    reads: int = 0
    hits: int = 0
    hot_reads: int = 0
    hot_hits: int = 0
    loads: int = 0            # source requests of misses
    refreshes: int = 0        # source requests of the scan's refreshes
    wasted: int = 0
    left_out: int = 0         # due keys worth a refresh waiting for the budget, summed over the scans
    learn_keys: int = 0       # hot keys first read in the window ...
    learn_misses: int = 0     # ... and their misses before their first hit
    unknown: int = 0          # reads of keys no keyspace matches (not simulated)

    def add(self, other: Figures) -> None:
        for name in vars(self):
            if name != "seconds":
                setattr(self, name, getattr(self, name) + getattr(other, name))
        self.seconds = max(self.seconds, other.seconds)

    @property
    def source(self) -> int:
        return self.loads + self.refreshes


@dataclass
class _Keys:
    """Per-key state, by key number."""

    score: list[float] = field(default_factory=list)
    fresh_until: list[float] = field(default_factory=list)   # the stored value's end of freshness
    pending_at: list[float] = field(default_factory=list)    # a load or refresh in flight writes at this time
    pending_fresh: list[float] = field(default_factory=list)  # ... a value fresh until this time
    version: list[int] = field(default_factory=list)         # of the due entry in the heap (stale ones skipped)
    queued: list[bool] = field(default_factory=list)         # has a live due entry (due heap or waiting)
    read_since: list[bool] = field(default_factory=list)     # read since its last refresh
    refreshed: list[bool] = field(default_factory=list)      # refreshed at least once
    learning: list[int] = field(default_factory=list)        # misses before the first hit; -1: has hit

    def add(self) -> None:
        for name, value in (("score", 0.0), ("fresh_until", -INF), ("pending_at", INF), ("pending_fresh", -INF),
                            ("version", 0), ("queued", False), ("read_since", False), ("refreshed", False),
                            ("learning", 0)):
            getattr(self, name).append(value)


def simulate(reads: Iterable[tuple[float, str]], params: Params, *, since: float = 0.0,
             hot: frozenset[str] = frozenset(), oracle: Mapping[str, float] | None = None) -> Figures:
    """Replays `reads` ((seconds, key), in time order) through the model; figures over reads at or after `since`.
    `hot`: the keys whose hit ratio and learning misses are reported apart; `oracle`: true read rates per key."""
    ids: dict[str, int] = {}
    names: list[str] = []
    k = _Keys()
    out = Figures()
    policy = params.policy()
    bound = policy.bound()
    cold = params.floor / COLD_FACTOR
    half_life, ttl, ahead, latency = params.half_life, params.ttl, params.refresh_ahead, params.latency
    true_count = {key: rate * half_life / LN2 for key, rate in oracle.items()} if oracle is not None else None
    heap: list[tuple[float, int, int]] = []        # (due time, key, version)
    wait: list[tuple[float, int, int]] = []        # (-value, key, version): due, worth it, not refreshed yet
    waiting: dict[int, int] = {}                   # key -> version of its live entry in `wait`
    epoch = 0.0
    budget = params.refresh_budget
    cap = burst(budget, params.scan_interval) if budget is not None else 0.0
    tokens, tokens_at = cap, 0.0
    next_scan = params.scan_interval
    first = last = None

    def settle(i: int, t: float) -> None:
        if k.pending_at[i] <= t:
            k.fresh_until[i] = k.pending_fresh[i]
            k.pending_at[i] = INF

    def start_load(i: int, t: float) -> None:
        waiting.pop(i, None)
        k.pending_at[i] = t + latency
        k.pending_fresh[i] = t + latency + ttl
        k.version[i] += 1
        k.queued[i] = True
        heapq.heappush(heap, (t + latency + ttl - ahead, i, k.version[i]))

    def value(i: int) -> float:
        """The key's worth in time-invariant units: its raw score (or, for the reference, its true count)."""
        return true_count.get(names[i], 0.0) if true_count is not None else k.score[i]

    def threshold(s: float) -> float:
        return bound if true_count is not None else bound * 2.0 ** ((s - epoch) / half_life)

    def refresh(i: int, s: float, measured: bool) -> None:
        if measured:
            out.refreshes += 1
            out.wasted += k.refreshed[i] and not k.read_since[i]
        k.read_since[i] = False
        k.refreshed[i] = True
        start = s + params.dispatch
        k.pending_at[i] = start + latency
        k.pending_fresh[i] = start + latency + ttl
        k.version[i] += 1
        waiting.pop(i, None)
        heapq.heappush(heap, (start + latency + ttl - ahead, i, k.version[i]))

    def scan(s: float) -> None:
        """Due keys worth a refresh wait in `wait`, a heap by value (raw scores order keys as decayed counts do,
        at any time), so a scan costs what it refreshes, not what waits."""
        nonlocal tokens, tokens_at
        bar = threshold(s)
        while heap and heap[0][0] <= s:
            _, i, version = heapq.heappop(heap)
            if version != k.version[i]:
                continue
            settle(i, s)
            if k.pending_at[i] != INF:  # a load or refresh in flight: not due (its claim or lease is held)
                continue
            worth = value(i)
            if worth > bar:
                waiting[i] = version
                heapq.heappush(wait, (-worth, i, version))
            else:
                k.queued[i] = False
        take = len(waiting)
        if budget is not None:
            tokens = min(cap, tokens + budget * (s - tokens_at))
            tokens_at = s
            take = min(take, int(tokens))
        measured = s >= since
        done = 0
        while wait and done < take:
            negative, i, version = heapq.heappop(wait)
            if waiting.get(i) != version:
                continue  # loaded or refreshed since it came due: a newer due entry stands for it
            if -negative <= bar:  # the most valuable waiting key is no longer worth it: none is
                for _, j, v in wait:
                    if waiting.get(j) == v:
                        k.queued[j] = False
                k.queued[i] = False
                waiting.clear()
                wait.clear()
                break
            refresh(i, s, measured)
            done += 1
        if budget is not None:
            tokens -= done
            if measured:
                out.left_out += len(waiting)

    for t, key in reads:
        if first is None:
            first = t
        last = t
        while next_scan <= t:
            scan(next_scan)
            next_scan += params.scan_interval
        i = ids.get(key)
        if i is None:
            i = ids[key] = len(names)
            names.append(key)
            k.add()
            if t >= since and key in hot:
                out.learn_keys += 1
            else:
                k.learning[i] = -1  # first read before the window, or not hot: not a learning key
        if (t - epoch) / half_life > RESCALE_AT:
            scale = 2.0 ** (-(t - epoch) / half_life)
            k.score = [score * scale for score in k.score]
            if true_count is None:
                wait[:] = [(worth * scale, i, v) for worth, i, v in wait]  # same order, new units
            epoch = t
        weight = 2.0 ** ((t - epoch) / half_life)
        if k.score[i] < cold * weight:  # decayed below the cold bound: a scan dropped it
            k.score[i] = 0.0
        k.score[i] += weight
        k.read_since[i] = True
        settle(i, t)
        hit = k.fresh_until[i] > t
        if not hit and k.pending_at[i] == INF:
            start_load(i, t)
            out.loads += t >= since
        elif hit and not k.queued[i]:  # read while fresh after its due entry was dropped (not worth then)
            k.queued[i] = True
            k.version[i] += 1
            heapq.heappush(heap, (max(t, k.fresh_until[i] - ahead), i, k.version[i]))
        if k.learning[i] >= 0:
            if hit:
                out.learn_misses += k.learning[i]
                k.learning[i] = -1
            else:
                k.learning[i] += 1
        if t >= since:
            out.reads += 1
            out.hits += hit
            if key in hot:
                out.hot_reads += 1
                out.hot_hits += hit
    for i in range(len(names)):  # learning keys that never hit count their misses when read twice or more
        if k.learning[i] >= 2:
            out.learn_misses += k.learning[i]
        elif k.learning[i] == 1:
            out.learn_keys -= 1  # read once, a miss: undetermined (as the bench counts it)
    if first is not None and last is not None:
        out.seconds = max(0.0, last - max(first, since))
    return out
