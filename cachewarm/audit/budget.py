"""The auditor's source requests, within two budgets shared by every worker: the keyspace's ``audit_budget``
(its own token bucket ``audit:rate:S``, burst 1, so that no second sees more than the budget) and the keyspace's
``rate`` (the refreshes' bucket ``rate:S``: an audit request is a source request like any other)."""

from __future__ import annotations

import threading

import redis

from ..config.keyspaces import Keyspace
from ..redis_layer import script_calls, scripts
from ..redis_layer.keys import KeyLayout


class AuditBudget:
    """Waits for the right to make one source request for a keyspace's audit."""

    def __init__(self, client: redis.Redis, layout: KeyLayout, keyspace: Keyspace, *, own: bool = True) -> None:
        """`own` false: the keyspace's `rate` alone (`cachewarm audit`, asked for rather than continuous)."""
        self.client = client
        shared = keyspace.config.rate
        self.rate = keyspace.audit_budget if own else float("inf")
        self.buckets = [(layout.audit_rate(keyspace.name), self.rate, 1.0)] if own else []
        if shared:  # the refreshes' bucket, with their burst (warming/ratelimit.py)
            self.buckets.append((layout.rate(keyspace.name), shared, max(1.0, shared)))

    def take(self, stop: threading.Event) -> bool:
        """Blocks until a token of each bucket was taken; False when `stop` was set first (or the budget is 0).
        Raises redis.RedisError."""
        if self.rate <= 0:
            return False
        for bucket, rate, burst in self.buckets:
            while True:
                wait_ms = scripts.run(self.client, script_calls.take(bucket=bucket, rate=rate, burst=burst))
                if wait_ms <= 0:
                    break
                if stop.wait(wait_ms / 1000):
                    return False
        return not stop.is_set()
