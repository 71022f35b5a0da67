"""cachewarm's own Celery app (`celery -A cachewarm.worker`, `cachewarm run`): JSON only, acks late for the
idempotent refresh work, prefetch 1, its two queues only, the scan's beat entry from settings.

Broker and cache are separate Redis databases (or servers): `CACHEWARM_BROKER_URL`, by default database 1 of the
cache's server. The app's workers consume cachewarm's queues (queues.py) and nothing else unless told otherwise
(`-Q`). Tasks are thin (cachewarm.tasks); the work lives in cachewarm.scan and cachewarm.refresh. A user's own app
gets the same tasks, routes, steps and beat entry from `install.install(app)`, without this app's settings.
"""

from __future__ import annotations

from celery import Celery

from .. import tasks
from ..settings import Settings
from . import metrics_step, queues, sidecar_step

# Tasks are short (a batch of refreshes takes well under a second at the default sizes); an unacked message of
# a worker that died is handed out again after this many seconds. Claims (scan.py) recover sooner than that.
VISIBILITY_TIMEOUT = 60


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or Settings.load()
    app = Celery("cachewarm", broker=settings.broker_url)
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
        task_queues=queues.cachewarm_queues(settings),
        task_routes=queues.routes(settings),
        beat_schedule={"cachewarm.scan": queues.scan_entry(settings)},
    )
    app.conf[tasks.SETTINGS_KEY] = settings
    tasks.register(app)
    sidecar_step.install(app)
    metrics_step.install(app)
    return app


app = create_app()


def app_settings() -> Settings:
    return tasks.settings_of(app)
