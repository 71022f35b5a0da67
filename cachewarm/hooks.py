"""Observation points of the read path, as no-op methods; the metrics module installs a Prometheus version.

Kept apart from prometheus_client so that importing cachewarm never fixes prometheus_client's process mode
(the workers switch it to multiprocess mode before the first metric exists).
"""

from __future__ import annotations


class Hooks:
    """Called by clients and workers on the paths that are not the plain hit."""

    def redis_error(self, operation: str) -> None:
        """A Redis call failed and the caller fell back."""

    def source_request(self, keyspace: str, seconds: float, outcome: str) -> None:
        """A source request finished: outcome is a `SourceOutcome` value (outcomes.py): ok, not_found, or the
        SourceError's kind."""

    def stale_served(self, keyspace: str) -> None:
        """An expired value was served because the source failed."""

    # ---- worker side ----
    def refresh(self, keyspace: str, outcome: str, count: int = 1) -> None:
        """`count` refreshes of keys ended (one call per batch and outcome: refresh.py); outcome is a
        `RefreshOutcome` value (outcomes.py)."""

    def invalidation(self, kind: str, outcome: str) -> None:
        """An invalidation event was handled: kind key|tag, outcome an `InvalidationOutcome` value."""

    def invalidation_lag(self, seconds: float) -> None:
        """Seconds from an event's publish time (its `ts` field) to its application."""

    # ---- the auditor (cachewarm/audit/) ----
    def audit_check(self, keyspace: str, result: str) -> None:
        """One audit of a key ended: result is an `AuditResult` value (outcomes.py)."""

    def audit_inconsistency(self, keyspace: str, cause: str, staleness: float) -> None:
        """An inconsistency was counted: cause an `AuditCause` value; staleness the stale value's age (s)."""

    def audit_repair(self, keyspace: str) -> None:
        """An inconsistent value was invalidated (fenced) by the auditor."""


_current = Hooks()


def get_hooks() -> Hooks:
    return _current


def set_hooks(hooks: Hooks) -> None:
    global _current
    _current = hooks
