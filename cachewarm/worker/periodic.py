"""The scan as a django-celery-beat ``PeriodicTask``: for a team whose beat runs the DatabaseScheduler.

That scheduler copies the app's ``beat_schedule`` (where `install.install` puts the scan) into its tables when beat
starts, so usually nothing is needed. This is for a data migration, or a project that manages its periodic tasks
in the database by hand (Django and django-celery-beat are the project's; cachewarm imports neither):

    from cachewarm.worker.periodic import create_scan_task

    def forwards(apps, schema_editor):
        create_scan_task(apps.get_model("django_celery_beat", "PeriodicTask"),
                         apps.get_model("django_celery_beat", "IntervalSchedule"))

IntervalSchedule counts whole seconds: a scan interval under a second is rounded up to one.
"""

from __future__ import annotations

import math
from typing import Any

from ..settings import Settings
from ..tasks import SCAN
from .queues import SCAN_ENTRY


def scan_task_fields(settings: Settings) -> dict[str, Any]:
    """The PeriodicTask's fields other than its schedule: task, queue, expiry (a stale scan is dropped)."""
    every = interval_seconds(settings)
    return {"task": SCAN, "queue": settings.scan_queue, "expire_seconds": every, "enabled": True,
            "args": "[]", "kwargs": "{}"}


def interval_seconds(settings: Settings) -> int:
    return max(1, math.ceil(settings.scan_interval))


def create_scan_task(periodic_task: Any, interval_schedule: Any, settings: Settings | None = None) -> Any:
    """Creates (or updates) the PeriodicTask named ``cachewarm.scan``; returns it. Idempotent: run it twice, one
    row. `periodic_task` and `interval_schedule` are the model classes (in a migration: ``apps.get_model``)."""
    settings = settings or Settings.load()
    interval, _ = interval_schedule.objects.get_or_create(every=interval_seconds(settings), period="seconds")
    task, _ = periodic_task.objects.update_or_create(
        name=SCAN_ENTRY, defaults={"interval": interval, **scan_task_fields(settings)})
    return task
