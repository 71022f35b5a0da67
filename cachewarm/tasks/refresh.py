"""`cachewarm.refresh`: refreshes one batch of keys on the process's refresh engine."""

from __future__ import annotations

from ..refresh_engine import get_engine
from ..worker.app import app, app_settings

BATCH_TIMEOUT = 300.0


@app.task(name="cachewarm.refresh", ignore_result=True)  # type: ignore[untyped-decorator]
def refresh(keys: list[str], force: bool = False) -> dict[str, int]:
    """Idempotent (fenced writes, "not due" skips), so acks-late redelivery is harmless."""
    counts = get_engine(app_settings()).submit(keys, force=force).result(BATCH_TIMEOUT)
    return dict(counts)
