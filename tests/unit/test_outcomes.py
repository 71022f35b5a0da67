"""The outcome names are label values users see (dashboards, alert rules select on them): spelt once, in
outcomes.py, and never changed silently."""

from __future__ import annotations

from cachewarm.errors import BadSourceResponse, SourceError
from cachewarm.outcomes import (
    COUNTED_REFRESH_OUTCOMES,
    SOURCE_ERROR_KINDS,
    InvalidationOutcome,
    RefreshOutcome,
    SourceOutcome,
)


def test_refresh_outcomes_and_their_counters_in_redis() -> None:
    assert [o.value for o in RefreshOutcome] == ["ok", "not_found", "fenced", "skipped", "busy", "error", "unknown"]
    assert [o.stat_name for o in RefreshOutcome] == ["refreshed", "not_found", "fenced", "skipped", "skipped",
                                                     "failed", "unknown"]
    assert RefreshOutcome.UNKNOWN not in COUNTED_REFRESH_OUTCOMES


def test_source_outcomes_are_the_source_error_kinds() -> None:
    assert [o.value for o in SOURCE_ERROR_KINDS] == ["timeout", "connect", "http_5xx", "http_status", "bad_response",
                                                    "exception", "error"]
    assert {o for o in SourceOutcome if not o.failed} == {SourceOutcome.OK, SourceOutcome.NOT_FOUND}
    assert SourceError("x").kind == "error" and BadSourceResponse("x").kind == "bad_response"


def test_invalidation_outcomes() -> None:
    assert [o.value for o in InvalidationOutcome] == ["applied", "stale", "dead", "error"]
    assert [o for o in InvalidationOutcome if o.done] == [InvalidationOutcome.APPLIED, InvalidationOutcome.STALE]
