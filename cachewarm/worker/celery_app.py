"""The Celery app: JSON only, acks late for the idempotent refresh work, beat schedule from settings.

Broker and cache are separate Redis databases (or servers): `CACHEWARM_BROKER_URL`, by default database 1 of the
cache's server. Tasks are thin; the work lives in cachewarm.scan and cachewarm.refresh.
"""

from __future__ import annotations

from celery import Celery

from ..settings import Settings
from . import metrics_step, sidecar_step

# Tasks are short (a batch of refreshes takes well under a second at the default sizes); an unacked message of
# a worker that died is handed out again after this many seconds. Claims (scan.py) recover sooner than that.
VISIBILITY_TIMEOUT = 60


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or Settings.load()
    app = Celery("cachewarm", broker=settings.broker_url, include=["cachewarm.tasks.scan",
                                                                   "cachewarm.tasks.refresh"])
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        worker_hijack_root_logger=False,
        # Reconnect to the broker within about a second of it coming back (kombu's default waits up to 30 s).
        worker_consumer="cachewarm.worker.consumer:Consumer",
        beat_schedule={
            "cachewarm.scan": {
                "task": "cachewarm.scan",
                "schedule": settings.scan_interval,
                # A scan that waited a whole period in the queue is obsolete: the next one is already due.
                "options": {"expires": settings.scan_interval},
            },
        },
    )
    app.conf.cachewarm_settings = settings
    return app


app = create_app()
sidecar_step.install(app)
metrics_step.install(app)


def app_settings() -> Settings:
    settings: Settings = app.conf.cachewarm_settings
    return settings
