"""Per-process metrics: what one process did (refreshes, source requests, invalidations, Redis errors).

These are counted in the process that did the work and summed by Prometheus (``sum by``). The read counters
(hits, misses, stale served, served age) are not here: every `Cache` already sends them to Redis, and
`cluster.ClusterCollector` exports those cluster-wide, so counting them again per process would give two
series for one fact.

Importing this module imports prometheus_client, which fixes its value class (plain or multiprocess) on first
import: worker processes call `multiprocess.enable()` before that (see worker/metrics_step.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from ..hooks import Hooks, set_hooks
from ..outcomes import (
    COUNTED_REFRESH_OUTCOMES,
    SOURCE_ERROR_KINDS,
    AuditCause,
    AuditResult,
    InvalidationOutcome,
    SourceOutcome,
)

SOURCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STALENESS_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 86400.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Label values known in advance; series for them exist (at 0) from the start, so rate() sees the first event.
REFRESH_OUTCOMES: tuple[str, ...] = COUNTED_REFRESH_OUTCOMES
INVALIDATION_KINDS = ("key", "tag")
# (ERROR is left out: a failed application is retried, and its series appears when one happens.)
INVALIDATION_OUTCOMES: tuple[str, ...] = (InvalidationOutcome.APPLIED, InvalidationOutcome.STALE,
                                          InvalidationOutcome.DEAD)
REDIS_OPERATIONS = ("read", "scrape")


class ProcessMetrics:
    """The per-process metric objects, registered in one registry."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.refreshes = Counter(
            "cachewarm_refreshes", "Refreshes of one key by a worker, by outcome.",
            ["keyspace", "outcome"], registry=registry)
        self.source_duration = Histogram(
            "cachewarm_source_request_duration_seconds",
            "Duration of source requests (readers' misses and workers' refreshes), failed ones included.",
            ["keyspace"], buckets=SOURCE_BUCKETS, registry=registry)
        self.source_errors = Counter(
            "cachewarm_source_errors", "Source requests that failed, by kind (timeout, connect, http_5xx, ...).",
            ["keyspace", "kind"], registry=registry)
        self.invalidations = Counter(
            "cachewarm_invalidations", "Invalidation events handled, by kind (key, tag) and outcome.",
            ["kind", "outcome"], registry=registry)
        self.invalidation_lag = Histogram(
            "cachewarm_invalidation_lag_seconds",
            "Seconds from an invalidation event's publish time (its ts field) to its application.",
            buckets=LAG_BUCKETS, registry=registry)
        self.redis_errors = Counter(
            "cachewarm_redis_errors", "Redis calls that failed and were fallen back from, by operation.",
            ["operation"], registry=registry)
        self.audit_checks = Counter(
            "cachewarm_audit_checks", "Keys the auditor compared with their source, by result.",
            ["keyspace", "result"], registry=registry)
        self.audit_inconsistencies = Counter(
            "cachewarm_audit_inconsistencies", "Cached values the auditor found replaced at the source, by cause.",
            ["keyspace", "cause"], registry=registry)
        self.audit_repairs = Counter(
            "cachewarm_audit_repairs", "Inconsistent values the auditor invalidated (fenced).",
            ["keyspace"], registry=registry)
        self.audit_staleness = Histogram(
            "cachewarm_audit_staleness_seconds",
            "Age of each inconsistent value the auditor found (seconds since it was fetched): how long it may "
            "have been served stale, at most.", ["keyspace"], buckets=STALENESS_BUCKETS, registry=registry)

    def audit_metrics(self) -> tuple[Counter | Histogram, ...]:
        return self.audit_checks, self.audit_inconsistencies, self.audit_repairs, self.audit_staleness

    def preset(self, keyspaces: Iterable[str]) -> None:
        """Creates the series of the known label values at 0 (a counter that appears at 1 hides its first rise)."""
        for name in keyspaces:
            for outcome in REFRESH_OUTCOMES:
                self.refreshes.labels(name, outcome)
            self.source_duration.labels(name)
            for failure in SOURCE_ERROR_KINDS:
                self.source_errors.labels(name, failure)
            for result in AuditResult:
                self.audit_checks.labels(name, result)
            for cause in AuditCause:
                self.audit_inconsistencies.labels(name, cause)
            self.audit_repairs.labels(name)
            self.audit_staleness.labels(name)
        for kind in INVALIDATION_KINDS:
            for outcome in INVALIDATION_OUTCOMES:
                self.invalidations.labels(kind, outcome)
        for operation in REDIS_OPERATIONS:
            self.redis_errors.labels(operation)


class PrometheusHooks(Hooks):
    """Hooks that count into `ProcessMetrics`; reads and stale serves are left to the Redis counters."""

    def __init__(self, metrics: ProcessMetrics) -> None:
        self.metrics = metrics
        # The source-request histogram's child per keyspace, looked up once: `labels()` per observation (label
        # checks, a lock, a tuple) cost more than the observation itself, once per refreshed key (issue 12).
        self._source_duration: dict[str, Histogram] = {}

    def redis_error(self, operation: str) -> None:
        self.metrics.redis_errors.labels(operation).inc()

    def source_request(self, keyspace: str, seconds: float, outcome: str) -> None:
        child = self._source_duration.get(keyspace)
        if child is None:
            child = self._source_duration[keyspace] = self.metrics.source_duration.labels(keyspace)
        child.observe(seconds)
        if outcome not in (SourceOutcome.OK, SourceOutcome.NOT_FOUND):
            self.metrics.source_errors.labels(keyspace, outcome).inc()

    def refresh(self, keyspace: str, outcome: str, count: int = 1) -> None:
        self.metrics.refreshes.labels(keyspace, outcome).inc(count)

    def invalidation(self, kind: str, outcome: str) -> None:
        self.metrics.invalidations.labels(kind, outcome).inc()

    def invalidation_lag(self, seconds: float) -> None:
        self.metrics.invalidation_lag.observe(max(0.0, seconds))

    def audit_check(self, keyspace: str, result: str) -> None:
        self.metrics.audit_checks.labels(keyspace, result).inc()

    def audit_inconsistency(self, keyspace: str, cause: str, staleness: float) -> None:
        self.metrics.audit_inconsistencies.labels(keyspace, cause).inc()
        self.metrics.audit_staleness.labels(keyspace).observe(max(0.0, staleness))

    def audit_repair(self, keyspace: str) -> None:
        self.metrics.audit_repairs.labels(keyspace).inc()


_installed: ProcessMetrics | None = None


def register_process_metrics(registry: CollectorRegistry | None = REGISTRY, *,
                             keyspaces: Iterable[str] = ()) -> ProcessMetrics:
    """Registers cachewarm's per-process metrics in `registry` and makes cachewarm count into them.

    For applications with their own ``/metrics`` (the default registry unless told otherwise)::

        from cachewarm.metrics import register_process_metrics
        register_process_metrics()                 # once, at start-up

    Calling it again returns the metrics already installed instead of registering duplicates.
    """
    global _installed
    if _installed is None:
        _installed = ProcessMetrics(registry)
        _installed.preset(keyspaces)
        if registry is not None:  # the near cache's figures, read at scrape time (metrics/near.py)
            from .near import NearCacheCollector

            registry.register(NearCacheCollector())
        set_hooks(PrometheusHooks(_installed))
    return _installed
