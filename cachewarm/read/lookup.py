"""What a read returns (`Lookup`) and how it is counted: the no-I/O half of the read path both clients share.

A read's accounting goes to the process's `AccessRecorder` (access.py): one deque append per read, flushed to Redis
in batches by its thread. `ReadAccounting` holds the client's share of that recorder and gives it back on close
(the last client's release stops the thread and closes its connection).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..hooks import get_hooks
from ..redis_layer import envelope
from ..settings import Settings
from .access import LOCAL_HIT, AccessRecorder, recorder_for, release_recorder
from .plans import Plan


@dataclass(frozen=True, slots=True)
class Lookup:
    """One read: the value, whether Redis had it fresh, and seconds since it was fetched from the source."""

    value: Any
    hit: bool
    age: float
    stale: bool = False


def loaded(raw: bytes, *, stale: bool = False) -> Lookup:
    """A value another loader wrote (or an expired one served stale), as a miss."""
    entry = envelope.decode(raw)
    age = max(0.0, time.time() - entry.fetched_ms / 1000)
    return Lookup(entry.value if entry.found else None, False, age, stale)


def is_fresh(raw: bytes | None) -> bool:
    """True for a value (or a remembered "no such item") that has not expired."""
    return raw is not None and envelope.expires_ms(raw) > time.time() * 1000


class ReadAccounting:
    """Counts each read (hit or miss, served age, popularity) in the process's recorder for this Redis."""

    __slots__ = ("_record", "recorder")

    def __init__(self, settings: Settings) -> None:
        self.recorder: AccessRecorder | None = recorder_for(
            settings.redis_url, settings.key_prefix, half_life=settings.hot_half_life,
            interval=settings.stats_flush_interval, timeout=settings.redis_timeout, cluster=settings.redis_cluster)
        self._record = self.recorder.record

    def hit(self, plan: Plan, raw: bytes | None) -> tuple[Any, float] | None:
        """Counts one read's look in Redis; (value, age) when it found a fresh value, else None (a miss)."""
        now = time.time()
        if raw is not None and envelope.expires_ms(raw) > now * 1000:
            value, fetched_ms = envelope.value_and_fetched(raw)
            age = max(0.0, now - fetched_ms / 1000)
            self._record(plan.label, plan.key, plan.max_tracked, True, age)
            return value, age
        self._record(plan.label, plan.key, plan.max_tracked, False, 0.0)
        return None

    def local_hit(self, plan: Plan, fetched_ms: int) -> float:
        """Counts a read served from the near cache (a hit, and popularity all the same); returns its age."""
        age = time.time() - fetched_ms / 1000
        if age < 0.0:
            age = 0.0
        self._record(plan.label, plan.key, plan.max_tracked, LOCAL_HIT, age)
        return age

    def miss(self, plan: Plan) -> None:
        """A read that could not look in Redis: a miss all the same (the source serves it)."""
        self._record(plan.label, plan.key, plan.max_tracked, False, 0.0)

    def stale(self, plan: Plan, raw: bytes) -> Lookup:
        """The expired value served because the source failed (within the keyspace's max_stale)."""
        get_hooks().stale_served(plan.label)
        if self.recorder is not None:
            self.recorder.count("stale:" + plan.label)
        return loaded(raw, stale=True)

    def flush(self) -> bool:
        """Sends the buffered counts now (blocking: one script call)."""
        return self.recorder.flush() if self.recorder is not None else True

    def close(self) -> None:
        """Gives the recorder back (the last user's release stops its thread and closes its connection)."""
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            release_recorder(recorder)
