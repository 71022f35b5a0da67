"""`cachewarm audit`: one audit now, of up to N recently read keys per keyspace, with the same checks, grace
window and causes as the workers' auditor; within each keyspace's ``rate`` but not its ``audit_budget`` (asked
for, not continuous). It repairs only when asked (`--repair`), counts nothing in the ledger or the metrics (the
nines are the continuous auditor's), and reports every inconsistency it found."""

from __future__ import annotations

import heapq
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..invalidation.apply import Hotness
from ..redis_layer.connections import sync_client
from ..redis_layer.keys import KeyLayout
from ..settings import Settings
from .auditor import KeyspaceAuditor
from .budget import AuditBudget
from .checking import http_client
from .repair import Repairer


@dataclass
class KeyspaceReport:
    keyspace: str
    keys: int = 0
    results: dict[str, int] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)


def audit_once(settings: Settings, *, keyspace: str | None = None, keys: int = 100,
               repair: bool = False) -> list[KeyspaceReport]:
    """Audits up to `keys` recently read keys of each keyspace (or of `keyspace`); raises redis.RedisError."""
    registry = settings.load_keyspaces()
    chosen = [registry[keyspace]] if keyspace is not None else list(registry)
    layout = KeyLayout(settings.key_prefix)
    client = sync_client(settings.redis_url, timeout=max(settings.redis_timeout, 2.0), cluster=settings.redis_cluster)
    stop = threading.Event()
    reports: list[KeyspaceReport] = []
    try:
        with http_client() as http:
            auditors: list[tuple[KeyspaceAuditor, KeyspaceReport]] = []
            for ks in chosen:
                repairer = (Repairer(client, layout, fence_ttl=settings.fence_ttl,
                                     hotness=Hotness(registry, settings.hot_half_life, settings.hot_threshold))
                            if repair else None)
                auditor = KeyspaceAuditor(client, layout, ks, http=http, repairer=repairer, record=False,
                                          budget=AuditBudget(client, layout, ks, own=False))
                report = KeyspaceReport(ks.name)
                for key in auditor.sampler.take(keys):
                    report.keys += 1
                    auditor.check(key, stop)
                auditors.append((auditor, report))
            for auditor, report in auditors:  # the re-checks, each when its window is over
                while auditor.pending:
                    item = heapq.heappop(auditor.pending)
                    time.sleep(max(0.0, item.due - time.monotonic()))
                    auditor.recheck(item, stop)
                report.results = dict(auditor.counts)
                report.findings = [{"key": f.key, "cause": str(f.cause), "age": round(f.age, 3),
                                    "repaired": f.repaired} for f in auditor.findings]
                reports.append(report)
    finally:
        client.close()
    return reports
