"""The refresh budget: the source requests per second a keyspace's refreshes may spend, chosen by value.

`refresh_budget` (per keyspace, requests/s; unset: no budget) is a token bucket the scan fills and spends: it
gains `budget` tokens a second up to `burst` (a second's worth, or two scans' when scans are further apart; at
least one), and
each key the scan claims costs one. The scan offers the due keys most valuable first (the most read: in one
keyspace a refresh's worth grows with the key's read rate, value.py), so when the budget runs short it is the
least read that wait, and they are counted as left out (``left_out:S``, a counter of keys left out per scan, and
the gauge ``left_out_keys:S`` of the last scan; ``cachewarm status`` and the metrics show both). A key left out
stays due: it is offered again at the next scan, or its next reader loads it.

The bucket lives in ``refresh:stats`` beside the scan's gauges (``budget_tokens:S``, ``budget_at_ms:S``, Redis's
clock): only the scan holding ``scan:lock`` touches it, read with the scan's first round trip and written with its
gauges, so the budget adds no round trip. The workers' ``rate`` bucket (ratelimit.py) still caps every source
request of a refresh (retries included); the budget decides which refreshes are asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Bucket:
    tokens: float
    at_ms: int


def burst(budget: float, scan_interval: float) -> float:
    """The most tokens the bucket holds: a second's worth, or two scan periods' when scans are further apart, and
    at least one (a budget under one request a second still refreshes, a key every 1 / budget seconds)."""
    return max(1.0, budget * max(1.0, 2 * scan_interval))


def refill(stats: Mapping[str, float], keyspace: str, *, budget: float, scan_interval: float,
           now_ms: int) -> float:
    """The tokens available at `now_ms` (a bucket never seen starts full)."""
    cap = burst(budget, scan_interval)
    tokens = stats.get(f"budget_tokens:{keyspace}")
    at_ms = stats.get(f"budget_at_ms:{keyspace}")
    if tokens is None or at_ms is None:
        return cap
    return min(cap, tokens + budget * max(0.0, now_ms - at_ms) / 1000)


def spent(keyspace: str, tokens: float, claimed: int, now_ms: int) -> dict[str, float]:
    """The bucket's fields after `claimed` keys were claimed from `tokens`."""
    return {f"budget_tokens:{keyspace}": round(max(0.0, tokens - claimed), 3), f"budget_at_ms:{keyspace}": now_ms}


def choose(ranked: Sequence[str], tokens: float) -> tuple[list[str], list[str]]:
    """Splits due keys, most valuable first, into those the tokens pay for and those left out."""
    take = max(0, int(tokens))
    return list(ranked[:take]), list(ranked[take:])
