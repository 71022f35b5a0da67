"""How a refresh, a source request or an invalidation ended: the one spelling shared by the read path, warming,
invalidation, metrics and the CLI.

The values are the ``outcome`` label of ``cachewarm_refreshes_total`` and ``cachewarm_invalidations_total`` and
the ``kind`` label of ``cachewarm_source_errors_total`` (a public contract: dashboards select on them). The refresh
counters kept in Redis (``refresh:stats``) spell three of them differently, for history's sake;
`RefreshOutcome.stat_name` is that mapping, written once. A failed refresh is `RefreshOutcome.ERROR` everywhere
(label ``error``, counter ``failed:S``): the refresh code used to call it FAILED.
"""

from __future__ import annotations

from enum import StrEnum


class RefreshOutcome(StrEnum):
    """How one key's refresh ended."""

    OK = "ok"                # fetched and written
    NOT_FOUND = "not_found"  # the source said "no such item": the value was removed
    FENCED = "fenced"        # an invalidation came while fetching: nothing written
    SKIPPED = "skipped"      # not due (any more) when the lease was asked for
    BUSY = "busy"            # another loader held the key's lease
    ERROR = "error"          # the source or Redis failed
    UNKNOWN = "unknown"      # the key matches no keyspace (never counted in metrics)

    @property
    def stat_name(self) -> str:
        """The field prefix in ``refresh:stats`` (``refreshed:S``, ``failed:S``, ``skipped:S`` for busy too)."""
        return _STAT_NAMES.get(self, self.value)


_STAT_NAMES = {RefreshOutcome.OK: "refreshed", RefreshOutcome.BUSY: "skipped", RefreshOutcome.ERROR: "failed"}

# The outcomes a metric series is created for in advance (UNKNOWN has no keyspace label to count under).
COUNTED_REFRESH_OUTCOMES: tuple[RefreshOutcome, ...] = tuple(o for o in RefreshOutcome if o != RefreshOutcome.UNKNOWN)


class InvalidationOutcome(StrEnum):
    """How one invalidation event was handled."""

    APPLIED = "applied"  # the generation was bumped (and the value dropped)
    STALE = "stale"      # the event's version was not newer than one already seen: nothing to do
    DEAD = "dead"        # unparseable or delivered too often: copied to the dead-letter stream
    ERROR = "error"      # Redis failed while applying it: left pending, retried

    @property
    def done(self) -> bool:
        """Whether the entry may be acknowledged."""
        return self in (InvalidationOutcome.APPLIED, InvalidationOutcome.STALE)


class SourceOutcome(StrEnum):
    """How one source request ended (a reader's load or a refresh's fetch): `SourceError.kind` for the failures."""

    OK = "ok"                      # a value
    NOT_FOUND = "not_found"        # "no such item" (HTTP 404, a python: source's None)
    TIMEOUT = "timeout"            # no answer within the keyspace's timeout
    CONNECT = "connect"            # the source could not be reached
    HTTP_5XX = "http_5xx"          # the source answered 5xx
    HTTP_STATUS = "http_status"    # any other status that is neither 200 nor 404
    BAD_RESPONSE = "bad_response"  # an answer that is not storable JSON (BadSourceResponse)
    EXCEPTION = "exception"        # a python: source function raised
    ERROR = "error"                # a SourceError raised without a kind (by a python: source itself)

    @property
    def failed(self) -> bool:
        """Whether the request failed (counted in ``cachewarm_source_errors_total``, by this value)."""
        return self not in (SourceOutcome.OK, SourceOutcome.NOT_FOUND)


# The failures a metric series is created for in advance, per keyspace.
SOURCE_ERROR_KINDS: tuple[SourceOutcome, ...] = tuple(o for o in SourceOutcome if o.failed)


class AuditResult(StrEnum):
    """What one audit of a key found (label ``result`` of cachewarm_audit_checks_total)."""

    CONSISTENT = "consistent"      # the cache holds what the source has
    RESOLVED = "resolved"          # they differed, and within the grace window the cache caught up
    INCONSISTENT = "inconsistent"  # after the grace window the cache still held the same older value
    SKIPPED = "skipped"            # nothing to compare: no value cached, or it is expired (no reader gets it)
    UNCOMPARABLE = "uncomparable"  # compared by content, the source answered two reads in a row differently
    ERROR = "error"                # the source or Redis failed


class AuditCause(StrEnum):
    """Why a value was inconsistent, as far as the auditor can see (label ``cause``; docs/AUDIT.md)."""

    MISSED = "missed"      # no invalidation for the key since its value was fetched: a writer did not publish
    LATE = "late"          # an event for the key (or one of its tags) is still undelivered or pending
    RACED = "raced"        # an event was applied around the value's fetch, yet the value is the old one
    FLAPPING = "flapping"  # the source changed again within the grace window


# Results that are a verdict on a cached value (the "nines" are counted over these).
AUDIT_VERDICTS: tuple[AuditResult, ...] = (AuditResult.CONSISTENT, AuditResult.RESOLVED, AuditResult.INCONSISTENT)
