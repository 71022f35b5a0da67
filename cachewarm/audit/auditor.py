"""The auditor of one keyspace: looks at its recently read keys one by one within its budget, and counts an
inconsistency only when a mismatch outlives the grace window (docs/AUDIT.md).

A look (`check`) reads the cached value, then asks the source. Equal: consistent. Compared by content and
different, the source is asked once more at once: a source whose answers differ from one read to the next (a
timestamp in the body) cannot be compared by content (result ``uncomparable``, a warning naming
``version_field``). Different: maybe an update in flight, so the key is looked at again (`recheck`) after the
grace window; if by then the cache holds other bytes (the value was invalidated, reloaded, expired) the mismatch
resolved itself, and so it did if the source now gives what the cache holds. Only the same cached bytes against a
source still newer count as an inconsistency, labelled with its cause (causes.py) and repaired unless
``audit_repair = false``.

The grace window is ``audit_grace`` when set, else LAG_FACTOR times the invalidation lag as it stands (the age of
the oldest event not yet applied), never less than MIN_GRACE nor more than MAX_GRACE seconds.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field

import httpx
import redis

from ..config.keyspaces import Keyspace
from ..config.sources import Fetched, Source, build_source
from ..errors import SourceError
from ..hooks import get_hooks
from ..outcomes import AuditCause, AuditResult
from ..redis_layer.keys import KeyLayout
from . import causes, ledger
from .budget import AuditBudget
from .checking import Cached, fetch, now_ms, read_cached, same_source, stale
from .repair import Repairer
from .sampling import Sampler

log = logging.getLogger("cachewarm.audit")

MIN_GRACE = 2.0
MAX_GRACE = 60.0
LAG_FACTOR = 3.0
MAX_PENDING = 1000  # mismatches waiting for their re-check at most (more: the newest are dropped, uncounted)
IDLE_WAIT = 1.0  # seconds between rounds that found nothing to look at
GIVE_UP = 3  # uncomparable checks, and not one consistent, after which a keyspace's audit stops


@dataclass(order=True, slots=True)
class Pending:
    """A mismatch waiting for its re-check."""

    due: float  # time.monotonic() of the re-check
    seq: int
    key: str = field(compare=False)
    params: dict[str, str] = field(compare=False)
    cached: Cached = field(compare=False)
    first: Fetched = field(compare=False)
    window_ms: int = field(compare=False)


@dataclass(slots=True)
class Finding:
    """An inconsistency: the key, its cause, the stale value's age, whether it was repaired."""

    key: str
    cause: AuditCause
    age: float
    repaired: bool


class KeyspaceAuditor:
    """Checks and re-checks one keyspace's keys; `step` does one unit of work, `run` loops until stopped."""

    def __init__(self, client: redis.Redis, layout: KeyLayout, keyspace: Keyspace, *, http: httpx.Client,
                 budget: AuditBudget | None, repairer: Repairer | None, record: bool = True,
                 source: Source | None = None) -> None:
        self.client, self.layout, self.keyspace = client, layout, keyspace
        self.name = keyspace.name
        self.http, self.budget, self.repairer, self.record = http, budget, repairer, record
        self.source = source or build_source(keyspace)
        self.versioned = keyspace.config.version_field is not None
        self.sampler = Sampler(client, layout, keyspace.name)
        self.pending: list[Pending] = []
        self._seq = itertools.count()
        self.findings: list[Finding] = []
        self.counts: dict[str, int] = {}
        self._asked = True  # a source request was made in the sampler's current round
        self.gave_up = False  # by content, the source never answers the same twice: nothing to compare

    # ---- one unit of work ----
    def grace(self) -> float:
        configured = self.keyspace.config.audit_grace
        if configured is not None:
            return configured
        lag = causes.unapplied_age(self.client, now_ms())
        return min(MAX_GRACE, max(MIN_GRACE, LAG_FACTOR * lag))

    def _ask(self, stop: threading.Event, key: str, params: dict[str, str],
             held: bytes | None) -> tuple[Cached, Fetched] | AuditResult | None:
        """Once the budget allows a request: the cached value and the source's, asked only while the cache still
        serves a value (the bytes `held`, when given), so that no request is made for a value gone meanwhile
        (RESOLVED when `held` changed, else SKIPPED); None when stopped. Raises SourceError."""
        if self.budget is not None and not self.budget.take(stop):
            return None
        cached = read_cached(self.client, self.layout, key)
        if cached is None or not cached.served(now_ms()) or (held is not None and cached.raw != held):
            return AuditResult.RESOLVED if held is not None else AuditResult.SKIPPED
        self._asked = True
        return cached, fetch(self.source, params, self.http)

    def _asked_or_ended(self, stop: threading.Event, key: str, params: dict[str, str],
                        held: bytes | None) -> tuple[Cached, Fetched] | AuditResult | None:
        """`_ask`, its ending counted (a source failure as ERROR)."""
        try:
            answer = self._ask(stop, key, params, held)
        except SourceError as exc:
            log.debug("audit of %s: source failed: %s", self.name, exc)
            answer = AuditResult.ERROR
        if isinstance(answer, AuditResult):
            self._count(answer)
        return answer

    def _count(self, result: AuditResult, **extra: int) -> None:
        self.counts[result] = self.counts.get(result, 0) + 1
        get_hooks().audit_check(self.name, result)
        if self.record and (result in (AuditResult.CONSISTENT, AuditResult.RESOLVED, AuditResult.INCONSISTENT)):
            ledger.record(self.client, self.layout, self.name, now_ms(), checks=1, **extra)

    def check(self, key: str, stop: threading.Event) -> AuditResult | None:
        """The first look at a key; None when it became a pending re-check (or the auditor was stopped)."""
        found = self.keyspace.match(key)
        cached = read_cached(self.client, self.layout, key) if found is not None else None
        if found is None or cached is None or not cached.served(now_ms()):
            self._count(AuditResult.SKIPPED)  # nothing a reader gets: no source request for it
            return AuditResult.SKIPPED
        answer = self._asked_or_ended(stop, key, found, None)
        if not isinstance(answer, tuple):
            return answer
        cached, first = answer
        if not stale(cached.entry, first, versioned=self.versioned):
            self._count(AuditResult.CONSISTENT)
            return AuditResult.CONSISTENT
        if not self._by_version(cached, first):  # by content: is the source's answer stable at all?
            again = self._asked_or_ended(stop, key, found, None)  # (any value still served: the source is judged)
            if not isinstance(again, tuple):
                return again
            if not same_source(first, again[1], versioned=False):
                self._uncomparable()
                return AuditResult.UNCOMPARABLE
        if len(self.pending) < MAX_PENDING:
            window = self.grace()
            heapq.heappush(self.pending, Pending(time.monotonic() + window, next(self._seq), key, found, cached,
                                                 first, int(window * 1000)))
        return None

    def recheck(self, item: Pending, stop: threading.Event) -> AuditResult | None:
        """The second look, after the grace window; None when stopped."""
        cached = read_cached(self.client, self.layout, item.key)
        if cached is None or cached.raw != item.cached.raw or not cached.served(now_ms()):  # gone, new or expired
            self._count(AuditResult.RESOLVED)
            return AuditResult.RESOLVED
        answer = self._asked_or_ended(stop, item.key, item.params, item.cached.raw)
        if not isinstance(answer, tuple):
            return answer
        cached, second = answer
        if not stale(cached.entry, second, versioned=self.versioned):
            self._count(AuditResult.RESOLVED)
            return AuditResult.RESOLVED
        cause = causes.classify(self.client, self.layout, key=item.key, tags=self.keyspace.tags_for(item.params),
                                cached=cached.entry, first=item.first, second=second, window_ms=item.window_ms,
                                versioned=self.versioned)
        age = max(0.0, (now_ms() - cached.entry.fetched_ms) / 1000)
        repaired = False
        if self.repairer is not None:
            repaired = self.repairer.repair(item.key, second.version if self.versioned else None)
        self.findings.append(Finding(item.key, cause, age, repaired))
        hooks = get_hooks()
        hooks.audit_inconsistency(self.name, cause, age)
        if repaired:
            hooks.audit_repair(self.name)
        self._count(AuditResult.INCONSISTENT, bad=1, repairs=int(repaired))
        log.warning("audit: %s held a value the source had replaced (%s, %.1f s old)%s", self.name, cause, age,
                    ", repaired" if repaired else "")
        return AuditResult.INCONSISTENT

    def _by_version(self, cached: Cached, fetched: Fetched) -> bool:
        return self.versioned and cached.entry.version is not None and fetched.version is not None

    def _uncomparable(self) -> None:
        self._count(AuditResult.UNCOMPARABLE)
        if self.counts[AuditResult.UNCOMPARABLE] >= GIVE_UP and not self.counts.get(AuditResult.CONSISTENT):
            self.gave_up = True
            log.warning("audit of %s stopped: the source answered two reads in a row differently %d times and never "
                        "what the cache holds (a timestamp in the body?), so its values cannot be compared by "
                        "content: set the keyspace's version_field (docs/AUDIT.md)", self.name, GIVE_UP)

    def step(self, stop: threading.Event) -> bool:
        """A due re-check, else the next key's first look; False when there was nothing to look at."""
        if self.pending and self.pending[0].due <= time.monotonic():
            self.recheck(heapq.heappop(self.pending), stop)
            return True
        rounds = self.sampler.rounds
        key = self.sampler.next()
        if key is None:
            return False
        if self.sampler.rounds != rounds:  # a new round: rest first if the last one found nothing to ask about
            idle, self._asked = not self._asked, False
            if idle:
                self.sampler.push_back(key)
                return False
        self.check(key, stop)
        return True

    def run(self, stop: threading.Event) -> None:
        """Loops until `stop` is set; a Redis failure is logged and waited out."""
        while not stop.is_set() and not self.gave_up:
            try:
                if not self.step(stop):
                    wait = IDLE_WAIT
                    if self.pending:
                        wait = min(wait, max(0.0, self.pending[0].due - time.monotonic()))
                    stop.wait(wait)
            except redis.RedisError as exc:
                log.warning("audit of %s: Redis failed (%s: %s); trying again in %.0f s", self.name,
                            type(exc).__name__, exc, IDLE_WAIT)
                stop.wait(IDLE_WAIT)
            except Exception:  # never let the auditor's thread die silently
                log.exception("audit of %s failed", self.name)
                stop.wait(IDLE_WAIT)
