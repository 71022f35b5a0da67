"""The near cache's figures as Prometheus metrics, read from this process's near caches at scrape time.

A local hit costs a few microseconds; a Prometheus counter increment per hit would be a large part of that. So the
near cache counts in plain integers (near/cache.py) and this collector reads them when Prometheus scrapes: the
pattern prometheus_client documents for values kept elsewhere. Registered by `register_process_metrics`, so an
application that exposes its own /metrics gets them with the rest of cachewarm's per-process metrics.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..near.cache import live_near_caches

_PER_KEYSPACE = (
    ("hits", "cachewarm_local_hits", "Reads answered from this process's near cache.", True),
    ("misses", "cachewarm_local_misses", "Reads of local keyspaces the near cache could not answer.", True),
    ("evictions", "cachewarm_local_evictions", "Local copies evicted by the entry or byte bound.", True),
    ("entries", "cachewarm_local_entries", "Local copies held now.", False),
    ("bytes", "cachewarm_local_bytes", "Bytes of local copies held now (estimate: value size + overhead).", False),
)


class NearCacheCollector(Collector):
    """Sums the figures of every open near cache of this process, per keyspace."""

    def collect(self) -> Iterator[Metric]:
        per_keyspace: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        link: dict[str, int] = defaultdict(int)
        for near in live_near_caches():
            for label, figures in near.figures().items():
                target = link if label == "_link" else per_keyspace[label]
                for name, value in figures.items():
                    target[name] += value
        for field, name, documentation, counter in _PER_KEYSPACE:
            family = (CounterMetricFamily(name, documentation, labels=["keyspace"]) if counter
                      else GaugeMetricFamily(name, documentation, labels=["keyspace"]))
            for keyspace, figures in sorted(per_keyspace.items()):
                family.add_metric([keyspace], figures[field])
            yield family
        yield CounterMetricFamily("cachewarm_local_invalidations", "Keys Redis pushed as changed to this process.",
                                  value=link["invalidations"])
        yield CounterMetricFamily("cachewarm_local_link_resets",
                                  "Times every local copy was dropped because a tracking link broke or lagged.",
                                  value=link["resets"])
        yield GaugeMetricFamily("cachewarm_local_links_healthy", "Tracking links healthy now.",
                                value=link["healthy"])
