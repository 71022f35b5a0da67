"""`cachewarm.refresh`: refreshes one batch of keys on the process's refresh engine.

The task hands its batch to the engine and returns as soon as fewer than MAX_IN_FLIGHT batches are running in
this process, so a prefork child takes its next task while the previous batch still waits for its slowest keys
(one batch at a time left the fetch pool idle between batches). Trade-off on acks: with acks late the message is
acknowledged when the task returns, which can now be before its batch is done; a worker killed then loses that
message, not its keys. Those are recovered without the broker: their claims (scan.py, claim TTL) lapse and the
next scan enqueues them again, and a lease left by the dead worker is taken over once its heartbeat is gone. At
most MAX_IN_FLIGHT - 1 batches per process are exposed this way; the refresh stays idempotent. A process that
exits on purpose (warm shutdown, `--max-tasks-per-child`) first finishes the batches it took.
"""

from __future__ import annotations

from typing import Any

from ..warming.refresh_engine import drain_engine, get_engine
from .context import settings_of

BATCH_TIMEOUT = 300.0
# Batches a worker process keeps running at once (the task blocks while the engine already has this many).
MAX_IN_FLIGHT = 2
# How long an exiting worker process waits for the batches it already took.
DRAIN_TIMEOUT = 30.0


def refresh(task: Any, keys: list[str], force: bool = False) -> int:
    """The bound task's body. Idempotent (fenced writes, "not due" skips), so acks-late redelivery is harmless.
    Returns the number of keys handed to the engine."""
    engine = get_engine(settings_of(task.app))
    engine.submit(keys, force=force)
    if not engine.wait_below(MAX_IN_FLIGHT, BATCH_TIMEOUT):
        raise TimeoutError(f"refresh batches still running after {BATCH_TIMEOUT:g} s")
    return len(keys)


def drain(**_: Any) -> None:
    """At a pool child's exit or recycling (the main process runs no engine: hot keys are the sidecar's)."""
    drain_engine(DRAIN_TIMEOUT)
