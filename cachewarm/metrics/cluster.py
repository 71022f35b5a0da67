"""Cluster-wide metrics, read from Redis at scrape time.

Every `Cache` in every process adds its reads to the ``stats`` hash (access.py) and the workers keep their
counters and gauges in ``refresh:stats``; this collector turns those into Prometheus metrics when scraped. Each
endpoint exports the same cluster-wide values, so dashboards aggregate them with ``max``, not ``sum``.

Cost per scrape, whatever the number of keys: one pipeline (two hashes, the invalidation stream's pending summary
and dead-letter length, one GET per hot-set shard of each keyspace; on a Redis Cluster, split by node, plus a TIME
of its own), a second only for keyspaces whose hot-key gauge the workers have not written (a ZCOUNT per shard),
and a SCAN over the worker heartbeats bounded by `MAX_SCAN_CALLS`. Keyspace labels come from the
configured keyspace names, never from what Redis holds. When Redis fails, the scrape still answers without these
metrics and the failure is counted as ``cachewarm_redis_errors_total{operation="scrape"}``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from ..hooks import get_hooks
from ..read.access import AGE_BUCKETS
from ..redis_layer import scripts
from ..redis_layer.connections import sync_client
from ..redis_layer.keys import (
    CONSUMER_GROUP,
    DEAD_LETTER_STREAM,
    DEFAULT_PREFIX,
    HOT_SHARDS,
    INVALIDATION_STREAM,
    KeyLayout,
)
from ..redis_layer.popularity import hot_bound
from ..settings import Settings

_DEFAULTS = Settings.model_fields
MAX_SCAN_CALLS = 20
SCAN_COUNT = 1000


def _num(raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return 0.0


@dataclass
class ClusterSnapshot:
    """What one read of Redis found; also what `cachewarm status` prints."""

    keyspaces: list[str]
    stats: dict[str, float] = field(default_factory=dict)
    refresh: dict[str, float] = field(default_factory=dict)
    hot_keys: dict[str, float] = field(default_factory=dict)
    invalidation_pending: int = 0
    dead_letters: int = 0
    workers: int = 0
    workers_exact: bool = True
    now_ms: int = 0

    def stat(self, name: str, keyspace: str) -> float:
        return self.stats.get(f"{name}:{keyspace}", 0.0)

    def age_buckets(self, keyspace: str) -> tuple[list[tuple[str, float]], float]:
        """Cumulative (le, count) pairs from the per-bucket counts, and the sum of ages."""
        buckets: list[tuple[str, float]] = []
        total = 0.0
        for index, bound in enumerate((*AGE_BUCKETS, math.inf)):
            total += self.stats.get(f"age:{keyspace}:{index}", 0.0)
            buckets.append(("+Inf" if bound == math.inf else repr(float(bound)), total))
        return buckets, self.stats.get("agesum:" + keyspace, 0.0)


def _decode_hash(raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        return {}
    return {(k.decode() if isinstance(k, bytes) else str(k)): _num(v) for k, v in raw.items()}


def read_snapshot(client: redis.Redis, layout: KeyLayout, keyspaces: Sequence[str], *,
                  hot_half_life: float, hot_threshold: float) -> ClusterSnapshot:
    """Reads every cluster-wide figure in a bounded number of calls; raises redis.RedisError."""
    snap = ClusterSnapshot(list(keyspaces))
    cluster = scripts.is_cluster(client)
    pipe = client.pipeline(transaction=False)
    if not cluster:  # a cluster pipeline refuses TIME (no key to route it by): asked on its own below
        pipe.time()
    pipe.hgetall(layout.stats)
    pipe.hgetall(layout.refresh_stats)
    pipe.xpending(INVALIDATION_STREAM, CONSUMER_GROUP)
    pipe.xlen(DEAD_LETTER_STREAM)
    for name in keyspaces:
        for shard in range(HOT_SHARDS):
            pipe.get(layout.hot_epoch(name, shard))
    results = pipe.execute(raise_on_error=False)
    if cluster:
        results.insert(0, client.time())
    for result in results:
        if isinstance(result, redis.ConnectionError | redis.TimeoutError):
            raise result
    now, stats, refresh, pending, dead, *all_epochs = results
    epochs = [all_epochs[i:i + HOT_SHARDS] for i in range(0, len(all_epochs), HOT_SHARDS)]
    if isinstance(now, Exception) or isinstance(stats, Exception) or isinstance(refresh, Exception):
        raise redis.RedisError(f"reading cluster stats failed: {now if isinstance(now, Exception) else stats}")
    snap.now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    snap.stats = _decode_hash(stats)
    snap.refresh = _decode_hash(refresh)
    # NOGROUP / no such key: nobody consumes yet, so nothing is pending.
    snap.invalidation_pending = int(pending.get("pending", 0)) if isinstance(pending, dict) else 0
    snap.dead_letters = int(dead) if isinstance(dead, int) else 0

    missing: list[tuple[str, int, float]] = []
    for name, shard_epochs in zip(keyspaces, epochs, strict=True):
        written = snap.refresh.get("hot_keys:" + name)
        snap.hot_keys[name] = written if written is not None else 0
        if written is not None:
            continue
        for shard, epoch in enumerate(shard_epochs):
            if epoch is not None and not isinstance(epoch, Exception):
                # Hot: strictly above the bound (popularity.is_hot, on Redis's clock): ZCOUNT from '(bound'.
                missing.append((name, shard, hot_bound(hot_threshold, snap.now_ms, _num(epoch), hot_half_life)))
    if missing:
        pipe = client.pipeline(transaction=False)
        for name, shard, low in missing:
            pipe.zcount(layout.hot(name, shard), f"({low!r}", "+inf")
        for (name, _, _), count in zip(missing, pipe.execute(), strict=True):
            snap.hot_keys[name] += float(count)

    snap.workers, snap.workers_exact = count_workers(client, layout)
    return snap


def count_workers(client: redis.Redis, layout: KeyLayout) -> tuple[int, bool]:
    """Live worker heartbeat keys, by SCAN of at most MAX_SCAN_CALLS calls (on a Redis Cluster, of every node, at
    most MAX_SCAN_CALLS * SCAN_COUNT names); (count, whether the scan finished)."""
    match = layout.worker("*").replace("[", "\\[")
    seen: set[bytes | str] = set()
    if scripts.is_cluster(client):
        for name in client.scan_iter(match=match, count=SCAN_COUNT):
            seen.add(name)
            if len(seen) >= MAX_SCAN_CALLS * SCAN_COUNT:
                return len(seen), False
        return len(seen), True
    cursor: int = 0
    for _ in range(MAX_SCAN_CALLS):
        cursor, keys = client.scan(cursor, match=match, count=SCAN_COUNT)
        seen.update(keys)
        if cursor == 0:
            return len(seen), True
    return len(seen), False


class ClusterCollector(Collector):
    """Exports the cluster-wide figures of one Redis and prefix, read at each scrape."""

    def __init__(self, client: redis.Redis, keyspaces: Iterable[str], *, prefix: str = DEFAULT_PREFIX,
                 hot_half_life: float = _DEFAULTS["hot_half_life"].default,
                 hot_threshold: float = _DEFAULTS["hot_threshold"].default) -> None:
        self.client = client
        self.layout = KeyLayout(prefix)
        self.keyspaces = list(keyspaces)
        self.hot_half_life = hot_half_life
        self.hot_threshold = hot_threshold

    @classmethod
    def from_settings(cls, settings: Settings) -> ClusterCollector:
        client = sync_client(settings.redis_url, timeout=max(settings.redis_timeout, 1.0),
                             cluster=settings.redis_cluster)
        return cls(client, settings.load_keyspaces().names(), prefix=settings.key_prefix,
                   hot_half_life=settings.hot_half_life, hot_threshold=settings.hot_threshold)

    def collect(self) -> Iterator[Any]:
        try:
            snap = read_snapshot(self.client, self.layout, self.keyspaces, hot_half_life=self.hot_half_life,
                                 hot_threshold=self.hot_threshold)
        except redis.RedisError:
            get_hooks().redis_error("scrape")
            return
        yield from families(snap)


def families(snap: ClusterSnapshot) -> Iterator[Any]:
    """The metric families of one snapshot."""
    hits = CounterMetricFamily("cachewarm_cache_hits", "Reads served from the cache, all processes.",
                               labels=["keyspace"])
    misses = CounterMetricFamily("cachewarm_cache_misses", "Reads that went to the source, all processes.",
                                 labels=["keyspace"])
    local = CounterMetricFamily("cachewarm_cache_local_hits",
                                "Of the hits, those a process's near cache answered (local = true), all processes.",
                                labels=["keyspace"])
    stale = CounterMetricFamily("cachewarm_stale_served",
                                "Expired values served because the source failed, all processes.",
                                labels=["keyspace"])
    age = HistogramMetricFamily("cachewarm_served_value_age_seconds",
                                "Age (since fetched from the source) of values served on hits.", labels=["keyspace"])
    late = CounterMetricFamily("cachewarm_refresh_late",
                               "Refreshes that came after the key had already expired.", labels=["keyspace"])
    wasted = CounterMetricFamily("cachewarm_refresh_wasted",
                                 "Refreshes of keys that were not read again before the next refresh.",
                                 labels=["keyspace"])
    hot = GaugeMetricFamily("cachewarm_hot_keys", "Keys hot enough to be kept warm.", labels=["keyspace"])
    backlog = GaugeMetricFamily("cachewarm_refresh_backlog_keys", "Keys due for refresh but not yet refreshed.",
                                labels=["keyspace"])
    behind = GaugeMetricFamily("cachewarm_refresh_backlog_seconds",
                               "How far behind schedule the oldest due refresh is.", labels=["keyspace"])
    left_out = CounterMetricFamily("cachewarm_refresh_left_out",
                                   "Due keys worth a refresh that the keyspace's refresh_budget left out, counted at "
                                   "each scan that left them.", labels=["keyspace"])
    left_now = GaugeMetricFamily("cachewarm_refresh_left_out_keys",
                                 "Due keys worth a refresh that the last scan left out for the refresh budget.",
                                 labels=["keyspace"])
    for name in snap.keyspaces:
        left_out.add_metric([name], snap.refresh.get("left_out:" + name, 0.0))
        left_now.add_metric([name], snap.refresh.get("left_out_keys:" + name, 0.0))
        hits.add_metric([name], snap.stat("hit", name))
        misses.add_metric([name], snap.stat("miss", name))
        local.add_metric([name], snap.stat("local_hit", name))
        stale.add_metric([name], snap.stat("stale", name))
        buckets, total = snap.age_buckets(name)
        age.add_metric([name], buckets, total)
        late.add_metric([name], snap.refresh.get("late:" + name, 0.0))
        wasted.add_metric([name], snap.refresh.get("wasted:" + name, 0.0))
        hot.add_metric([name], snap.hot_keys.get(name, 0.0))
        backlog.add_metric([name], snap.refresh.get("backlog_keys:" + name, 0.0))
        behind.add_metric([name], snap.refresh.get("backlog_seconds:" + name, 0.0))
    yield from (hits, misses, local, stale, age, late, wasted, hot, backlog, behind, left_out, left_now)
    yield GaugeMetricFamily("cachewarm_invalidation_pending",
                            "Invalidation events delivered to a consumer but not yet acknowledged.",
                            value=snap.invalidation_pending)
    yield GaugeMetricFamily("cachewarm_invalidation_dead_letters",
                            "Entries in the invalidation dead-letter stream.", value=snap.dead_letters)
    yield CounterMetricFamily("cachewarm_invalidation_gaps",
                              "Invalidation stream gaps (events trimmed unread); each dropped every cached value.",
                              value=snap.refresh.get("invalidation_gaps", 0.0))
    yield GaugeMetricFamily("cachewarm_workers", "Workers with a live heartbeat.", value=snap.workers)
