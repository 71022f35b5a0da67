"""What the invalidation stream holds for the workers, as `cachewarm status` and `cachewarm invalidate` tell it.

- **undelivered**: entries no consumer of the group has read yet: the group's ``lag`` (XINFO GROUPS, Redis 7+). Redis
  leaves it unknown after some deletions and trims; then the entries after the group's last-delivered id are
  counted (XRANGE, at most COUNT_LIMIT). With no group yet (no worker ever started), every entry in the stream is
  undelivered: the first consumer creates the group at the stream's start and reads them all.
- **pending**: read by a consumer but not acknowledged yet (XPENDING: being applied, or left by a dead consumer
  until another claims it).
- **dead letters**: entries moved to ``cachewarm:invalidations:dead`` (dead_letters.py).
- **consumers alive**: each running consumer renews a heartbeat ``consumer:<name>`` (keys.py) every BEAT_INTERVAL
  seconds with a BEAT_TTL_MS life, from its loop; one that has read the stream (XINFO CONSUMERS) within ALIVE_MS
  counts too. (XINFO's idle time alone cannot tell: before Redis 7.2 a read that finds nothing does not reset it, so
  a consumer of a quiet stream looks idle.) Consumers of stopped workers stay listed until pruned (an hour).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from ..redis_layer.keys import CONSUMER_GROUP, DEAD_LETTER_STREAM, INVALIDATION_STREAM, KeyLayout

ALIVE_MS = 15_000
BEAT_INTERVAL = 2.0
BEAT_TTL_MS = 15_000  # a consumer that backs off (at most 5 s after a Redis error) is still alive
COUNT_LIMIT = 10_000
MAX_LISTED = 1000


def beat(client: redis.Redis, layout: KeyLayout, name: str) -> None:
    """A consumer's heartbeat (its loop calls it every BEAT_INTERVAL seconds)."""
    client.set(layout.consumer(name), "1", px=BEAT_TTL_MS)


@dataclass
class Consumer:
    name: str
    pending: int
    idle: float | None  # seconds since it last read the stream (None: it has not yet)
    beating: bool = False  # its heartbeat is current

    @property
    def alive(self) -> bool:
        return self.beating or (self.idle is not None and self.idle * 1000 < ALIVE_MS)


@dataclass
class StreamState:
    length: int = 0
    undelivered: int = 0
    undelivered_exact: bool = True  # False: at least `undelivered` (counted up to COUNT_LIMIT)
    pending: int = 0
    dead_letters: int = 0
    group: bool = False  # the consumer group exists (a worker's consumer has started once)
    consumers: list[Consumer] = field(default_factory=list)

    @property
    def alive(self) -> list[Consumer]:
        return [c for c in self.consumers if c.alive]

    def as_dict(self) -> dict[str, Any]:
        return {"length": self.length, "undelivered": self.undelivered, "undelivered_exact": self.undelivered_exact,
                "pending": self.pending, "dead_letters": self.dead_letters, "group": self.group,
                "consumers_alive": len(self.alive),
                "consumers": [{"name": c.name, "pending": c.pending, "idle": c.idle, "alive": c.alive}
                              for c in self.consumers]}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def read_stream_state(client: redis.Redis, layout: KeyLayout) -> StreamState:
    """One pipeline (XLEN of both streams, XINFO GROUPS and CONSUMERS), a SCAN of the consumers' heartbeats, and a
    count only when the lag is unknown; raises redis.RedisError (a missing stream or group is no error: nothing was
    published, no worker started)."""
    pipe = client.pipeline(transaction=False)
    pipe.xlen(INVALIDATION_STREAM)
    pipe.xlen(DEAD_LETTER_STREAM)
    pipe.xinfo_groups(INVALIDATION_STREAM)
    pipe.xinfo_consumers(INVALIDATION_STREAM, CONSUMER_GROUP)
    length, dead, groups, consumers = pipe.execute(raise_on_error=False)
    for reply in (length, dead):
        if isinstance(reply, Exception):
            raise reply
    if isinstance(groups, redis.ConnectionError | redis.TimeoutError):
        raise groups
    state = StreamState(length=int(length), dead_letters=int(dead))
    start = len(layout.consumer(""))
    beating = {_text(k)[start:] for _, k in zip(range(MAX_LISTED),
                                                 client.scan_iter(match=layout.consumer("*"), count=1000),
                                                 strict=False)}
    state.consumers = [Consumer(name, 0, None, True) for name in sorted(beating)]
    group = None if isinstance(groups, Exception) else next(
        (g for g in groups if _text(g.get("name")) == CONSUMER_GROUP), None)
    if group is None:  # no group yet: the first consumer will read every entry there is
        state.undelivered = state.length
        return state
    state.group = True
    state.pending = int(group.get("pending") or 0)
    lag = group.get("lag")
    if lag is not None:
        state.undelivered = int(lag)
    else:  # unknown to Redis (after deletions): count what follows the last delivered id, up to a bound
        after = "(" + _text(group.get("last-delivered-id") or "0-0")
        counted = len(client.xrange(INVALIDATION_STREAM, min=after, max="+", count=COUNT_LIMIT + 1) or [])
        state.undelivered = min(counted, COUNT_LIMIT)
        state.undelivered_exact = counted <= COUNT_LIMIT
    if not isinstance(consumers, Exception):
        listed = [Consumer(_text(c["name"]), int(c.get("pending") or 0), int(c.get("idle") or 0) / 1000,
                           _text(c["name"]) in beating) for c in consumers]
        names = {c.name for c in listed}
        state.consumers = listed + [c for c in state.consumers if c.name not in names]
    state.consumers.sort(key=lambda c: (not c.alive, c.idle if c.idle is not None else 0.0))
    return state


def describe(state: dict[str, Any]) -> str:
    """The state (`StreamState.as_dict`, as `cachewarm status --json` prints it) on one line: ``undelivered: 2
    pending: 0  dead letters: 0  consumers: ...``."""
    undelivered = f"{state['undelivered']}" + ("" if state["undelivered_exact"] else "+")
    consumers = state["consumers"]
    alive = [c for c in consumers if c["alive"]]
    if alive:
        who = f"{len(alive)} alive"
    elif consumers:
        idle = min(c["idle"] for c in consumers if c["idle"] is not None)
        who = f"none alive (last read {idle:.0f} s ago: is a worker running?)"
    else:
        who = "none has read the stream yet (is a worker running?)"
    return (f"undelivered: {undelivered}   pending: {state['pending']}   dead letters: {state['dead_letters']}   "
            f"consumers: {who}")
