"""What the relay reports: rows published, rows dead-lettered, commit-to-stream lag, outages.

`RelayObserver` is the no-op seam; `prometheus_observer()` the Prometheus version, imported only by a process that
serves metrics (importing prometheus_client fixes its process mode). No label carries a key or a tag.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class RelayObserver:
    """Called by the relay after each batch and on each failure."""

    def published(self, lags: Sequence[float]) -> None:
        """Rows reached the stream; `lags` are their seconds from `created_ms` to the XADD's reply."""

    def dead(self, count: int) -> None:
        """Malformed rows were moved to the dead-letter stream."""

    def unavailable(self, dependency: str) -> None:
        """A batch failed because `dependency` (``redis``, ``database``; ``relay`` for a bug) failed; it is retried."""


class PrometheusRelayObserver(RelayObserver):
    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Histogram

        from ..metrics.process import LAG_BUCKETS

        self.rows = Counter("cachewarm_outbox_published_rows", "Outbox rows published to the invalidation stream.",
                            registry=registry)
        self.dead_rows = Counter("cachewarm_outbox_dead_rows",
                                 "Malformed outbox rows moved to cachewarm:invalidations:dead.", registry=registry)
        self.lag = Histogram("cachewarm_outbox_lag_seconds",
                             "Seconds from an outbox row's created_ms to its XADD on the invalidation stream.",
                             buckets=LAG_BUCKETS, registry=registry)
        self.errors = Counter("cachewarm_outbox_errors", "Relay batches that failed, by the dependency that failed.",
                              ["dependency"], registry=registry)
        for dependency in ("redis", "database"):
            self.errors.labels(dependency)

    def published(self, lags: Sequence[float]) -> None:
        self.rows.inc(len(lags))
        for lag in lags:
            self.lag.observe(max(0.0, lag))

    def dead(self, count: int) -> None:
        self.dead_rows.inc(count)

    def unavailable(self, dependency: str) -> None:
        self.errors.labels(dependency).inc()


_installed: PrometheusRelayObserver | None = None


def prometheus_observer(registry: Any = None) -> PrometheusRelayObserver:
    """The process's Prometheus observer (registered once, in the default registry unless told otherwise)."""
    global _installed
    if _installed is None:
        if registry is None:
            from prometheus_client import REGISTRY

            registry = REGISTRY
        _installed = PrometheusRelayObserver(registry)
    return _installed
