"""Snapshots of the cluster-wide read counters, so that `cachewarm status` can give a hit ratio *since a time*.

The counters in the ``stats`` hash only grow; a ratio over the last N seconds needs their values N seconds ago.
Every metrics endpoint (and every `cachewarm status`) adds a snapshot to the ``stats:history`` zset at most once
per `INTERVAL` cluster-wide (a SET NX lock elects the writer), and the zset keeps `RETENTION` of them.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis

from ..redis_layer.keys import KeyLayout

INTERVAL = 10.0
RETENTION_MS = 24 * 3600 * 1000
MAX_SNAPSHOTS = 10_000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    at_ms: int
    hits: dict[str, float]
    misses: dict[str, float]


def record(client: redis.Redis, layout: KeyLayout, stats: Mapping[str, float], keyspaces: Sequence[str],
           now_ms: int) -> bool:
    """Adds a snapshot of `stats` (the decoded ``stats`` hash) unless another was added in this interval."""
    lock = layout.stats_history_lock()
    if not client.set(lock, str(now_ms), nx=True, px=int(INTERVAL * 1000) - 500):
        return False
    member = json.dumps({"t": now_ms,
                         "hit": {name: stats.get("hit:" + name, 0.0) for name in keyspaces},
                         "miss": {name: stats.get("miss:" + name, 0.0) for name in keyspaces}},
                        separators=(",", ":"))
    key = layout.stats_history()
    pipe = client.pipeline(transaction=False)
    pipe.zadd(key, {member: now_ms})
    pipe.zremrangebyscore(key, "-inf", now_ms - RETENTION_MS)
    pipe.zremrangebyrank(key, 0, -MAX_SNAPSHOTS - 1)
    pipe.execute()
    return True


def at_or_before(client: redis.Redis, layout: KeyLayout, at_ms: int) -> Snapshot | None:
    """The newest snapshot taken at or before `at_ms`, else the oldest one kept (None when there is none)."""
    key = layout.stats_history()
    found = client.zrevrangebyscore(key, at_ms, "-inf", start=0, num=1) or client.zrange(key, 0, 0)
    if not found:
        return None
    data = json.loads(found[0])  # type: ignore[arg-type]
    return Snapshot(int(data["t"]), dict(data.get("hit", {})), dict(data.get("miss", {})))


class HistoryRecorder:
    """A daemon thread adding snapshots while a metrics endpoint runs."""

    def __init__(self, client: redis.Redis, layout: KeyLayout, keyspaces: Sequence[str]) -> None:
        self.client = client
        self.layout = layout
        self.keyspaces = list(keyspaces)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cachewarm-stats-history", daemon=True)

    def start(self) -> HistoryRecorder:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            self.record_once()
            if self._stop.wait(INTERVAL):
                return

    def record_once(self) -> None:
        try:
            seconds, micros = self.client.time()
            raw = self.client.hgetall(self.layout.stats)
            stats = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}
            record(self.client, self.layout, stats, self.keyspaces, seconds * 1000 + micros // 1000)
        except (redis.RedisError, ValueError) as exc:
            log.debug("stats snapshot skipped: %s", type(exc).__name__)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
