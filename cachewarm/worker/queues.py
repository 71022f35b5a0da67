"""cachewarm's place on a broker: its two queues, the routes and the beat entry that use them, and which worker
nodes are cachewarm's.

Refresh batches go to `settings.refresh_queue` (default ``cachewarm.refresh``), scans to `settings.scan_queue`
(``cachewarm.scan``): never to Celery's default queue, so on a broker shared with other Celery apps their workers
never receive cachewarm's tasks, nor cachewarm's workers theirs. Scans have a queue of their own so that a scan
never waits behind refresh batches (it expires after one scan period). A worker node is cachewarm's when it
consumes the refresh queue; only such a node runs cachewarm's sidecar and metrics (sidecar_step, metrics_step), so
installing cachewarm into an app leaves that app's other workers as they were.
"""

from __future__ import annotations

from typing import Any

from kombu.entity import Exchange, Queue

from ..settings import Settings
from ..tasks import REFRESH, SCAN, settings_of


def queue(name: str) -> Queue:
    """A direct exchange and a queue of the same name: what Celery makes of a queue it is only named."""
    return Queue(name, Exchange(name, type="direct"), routing_key=name)  # type: ignore[no-untyped-call]


def cachewarm_queues(settings: Settings) -> list[Queue]:
    return [queue(name) for name in dict.fromkeys((settings.refresh_queue, settings.scan_queue))]


def routes(settings: Settings) -> dict[str, dict[str, str]]:
    """The task routes (the tasks carry their queue too; routes also route a `send_task` by name)."""
    return {REFRESH: {"queue": settings.refresh_queue}, SCAN: {"queue": settings.scan_queue}}


# The name of the scan's `beat_schedule` entry (and of its django-celery-beat row, periodic.py): the task's own.
SCAN_ENTRY = SCAN


def scan_entry(settings: Settings) -> dict[str, Any]:
    """The `beat_schedule` entry of the scan (named SCAN_ENTRY)."""
    return {
        "task": SCAN,
        "schedule": settings.scan_interval,
        # A scan that waited a whole period in the queue is obsolete: the next one is already due.
        "options": {"expires": settings.scan_interval, "queue": settings.scan_queue},
    }


def runs_cachewarm(worker: Any) -> bool:
    """Whether a worker node (a WorkController, its queues selected) consumes cachewarm's refresh queue."""
    app = getattr(worker, "app", None)
    if app is None:
        return False
    return settings_of(app).refresh_queue in app.amqp.queues.consume_from
