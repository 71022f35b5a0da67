"""The audits of the last hour, cluster-wide, in Redis: one hash per minute (``audit:m:<minute>``, keys.py) with
per keyspace ``checks:S`` (verdicts: consistent, resolved or inconsistent), ``bad:S`` (inconsistencies) and
``repairs:S``, kept two hours. `cachewarm status` sums the last 60 minutes and turns them into "nines".

Nines: consistency as ``-log10(inconsistencies / checks)``, 1 - 10**-nines of the audited reads' values held what
the source had. With no inconsistency the figure is only a floor, ``log10(checks)`` (3,600 clean checks show
">= 3.6"): a sample can show no more nines than it has digits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from ..redis_layer.keys import KeyLayout

KEEP_SECONDS = 7200
HOUR_MINUTES = 60


def minute_of(now_ms: int) -> int:
    return now_ms // 60_000


def record(client: redis.Redis, layout: KeyLayout, keyspace: str, now_ms: int, *, checks: int = 0, bad: int = 0,
           repairs: int = 0) -> None:
    """Adds to the current minute's counts; raises redis.RedisError."""
    name = layout.audit_minute(minute_of(now_ms))
    pipe = client.pipeline(transaction=False)
    for field, n in (("checks", checks), ("bad", bad), ("repairs", repairs)):
        if n:
            pipe.hincrby(name, f"{field}:{keyspace}", n)
    pipe.expire(name, KEEP_SECONDS)
    pipe.execute()


@dataclass(frozen=True, slots=True)
class Tally:
    """A keyspace's audits over a span."""

    checks: int
    inconsistencies: int
    repairs: int

    @property
    def nines(self) -> float | None:
        """-log10 of the inconsistent share; with none, the floor log10(checks); None without checks."""
        if self.checks <= 0:
            return None
        if self.inconsistencies <= 0:
            return math.log10(self.checks) if self.checks > 1 else 0.0
        return max(0.0, -math.log10(self.inconsistencies / self.checks))

    @property
    def nines_floor(self) -> bool:
        """True when `nines` is only a floor (no inconsistency seen)."""
        return self.checks > 0 and self.inconsistencies <= 0

    def as_dict(self) -> dict[str, object]:
        return {"checks": self.checks, "inconsistencies": self.inconsistencies, "repairs": self.repairs,
                "nines": self.nines, "nines_floor": self.nines_floor}


def last_hour(client: redis.Redis, layout: KeyLayout, keyspaces: Sequence[str], now_ms: int) -> dict[str, Tally]:
    """Per keyspace, the audits of the last 60 minutes (the current one included); raises redis.RedisError."""
    pipe = client.pipeline(transaction=False)
    current = minute_of(now_ms)
    for minute in range(current - HOUR_MINUTES + 1, current + 1):
        pipe.hgetall(layout.audit_minute(minute))
    sums: dict[str, int] = {}
    for counts in pipe.execute():
        for field, n in counts.items():
            name = field.decode("utf-8", "replace")
            sums[name] = sums.get(name, 0) + int(n)
    return {ks: Tally(sums.get(f"checks:{ks}", 0), sums.get(f"bad:{ks}", 0), sums.get(f"repairs:{ks}", 0))
            for ks in keyspaces}


def describe(tally: Tally) -> str:
    """A keyspace's hour in one cell: ``1 bad / 3600 (3.6 nines)``, ``0 bad / 3600 (>= 3.6 nines)``, ``no audits``."""
    if tally.checks <= 0:
        return "no audits"
    nines = tally.nines or 0.0
    return f"{tally.inconsistencies} bad / {tally.checks} ({'>= ' if tally.nines_floor else ''}{nines:.1f} nines)"
