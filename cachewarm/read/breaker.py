"""The read path's circuit breaker: after a Redis failure, skip Redis for a while, then probe it once.

Both clients share it (one per client): during an outage each backoff period costs one read a timeout, not every
reader one each.
"""

from __future__ import annotations

import threading
import time

from ..hooks import get_hooks


class Breaker:
    """After a Redis failure the read path skips Redis for `backoff` seconds, then tries again by itself.

    Once the backoff is over, one caller at a time probes Redis (the others keep skipping it until the probe
    succeeds, `reset`, or fails, `trip`). `until` is 0.0 while Redis is healthy: the hit path tests only that.
    """

    __slots__ = ("_lock", "backoff", "until")

    def __init__(self, backoff: float) -> None:
        self.backoff = backoff
        self.until = 0.0
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        """True while Redis is to be skipped; False for a caller that may use it (perhaps as the probe)."""
        until = self.until
        if until == 0.0:
            return False
        now = time.monotonic()
        if now < until:
            return True
        with self._lock:
            if self.until != until:  # another caller took the probe, or the probe already succeeded
                return self.until != 0.0 and now < self.until
            self.until = now + self.backoff
        return False

    def trip(self, operation: str) -> None:
        """A Redis call of `operation` failed: skip Redis for the next `backoff` seconds."""
        self.until = time.monotonic() + self.backoff
        get_hooks().redis_error(operation)

    def reset(self) -> None:
        self.until = 0.0
