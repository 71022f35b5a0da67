"""The workers' continuous audit: one thread per audited keyspace (``audit_budget`` > 0), in the node's sidecar
(worker/sidecar.py; never in Celery's main process, which runs no thread). Every node audits; the budgets are
token buckets in Redis, so more nodes never mean more audit requests."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..invalidation.apply import Hotness
from ..redis_layer.connections import sync_client
from ..redis_layer.keys import KeyLayout
from ..settings import Settings
from .auditor import KeyspaceAuditor
from .budget import AuditBudget
from .checking import http_client
from .repair import Repairer

log = logging.getLogger("cachewarm.audit")


class AuditService:
    """Starts the keyspaces' auditors; `close` stops them (within a source request's timeout)."""

    def __init__(self, settings: Settings, *, refresh: Callable[[list[str]], None] | None = None) -> None:
        self.settings = settings
        self.refresh = refresh
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.auditors: list[KeyspaceAuditor] = []
        self._closers: list[Callable[[], None]] = []

    def start(self) -> AuditService:
        keyspaces = self.settings.load_keyspaces()
        audited = [ks for ks in keyspaces if ks.audit_budget > 0]
        if not audited:
            return self
        settings = self.settings
        client = sync_client(settings.redis_url, timeout=max(settings.redis_timeout, 2.0),
                             cluster=settings.redis_cluster)
        self._closers.append(client.close)
        layout = KeyLayout(settings.key_prefix)
        hotness = Hotness(keyspaces, settings.hot_half_life, settings.hot_threshold)
        for ks in audited:
            http = http_client()
            self._closers.append(http.close)
            repairer = (Repairer(client, layout, fence_ttl=settings.fence_ttl, hotness=hotness, refresh=self.refresh)
                        if ks.config.audit_repair else None)
            auditor = KeyspaceAuditor(client, layout, ks, http=http, budget=AuditBudget(client, layout, ks),
                                      repairer=repairer)
            thread = threading.Thread(target=auditor.run, args=(self.stop,), name=f"cachewarm-audit-{ks.name}",
                                      daemon=True)
            thread.start()
            self.auditors.append(auditor)
            self.threads.append(thread)
        log.info("cachewarm auditor: %s", ", ".join(f"{ks.name} at {ks.audit_budget:g}/s" for ks in audited))
        return self

    def close(self, timeout: float = 10.0) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout)
        for close in self._closers:
            try:
                close()
            except Exception:  # closing at exit: nothing left to do about it
                log.debug("closing the auditor's client failed", exc_info=True)
        self.threads.clear()
        self._closers.clear()
