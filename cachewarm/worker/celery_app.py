"""cachewarm's own Celery app (`celery -A cachewarm.worker`, `cachewarm run`): JSON only, acks late for the
idempotent refresh work, prefetch 1, its two queues only, the scan's beat entry from settings.

The broker is any Celery broker (`CACHEWARM_BROKER_URL`: Redis, RabbitMQ, Redis through Sentinel ...), by default
database 1 of the cache's server; the scan asks it for the refresh queue's length through kombu (tasks/backlog.py),
so nothing here depends on which. The app's workers consume cachewarm's queues (queues.py) and nothing else
unless told otherwise (`-Q`). Tasks are thin (cachewarm.tasks); the work lives in cachewarm.scan and
cachewarm.refresh. A user's own app gets the same tasks, routes, steps and beat entry from `install.install(app)`,
without this app's settings.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from celery import Celery

from .. import tasks
from ..config.sources import load_startup_hooks
from ..settings import Settings
from . import metrics_step, queues, sidecar_step

# Tasks are short (a batch of refreshes takes well under a second at the default sizes); an unacked message of
# a worker that died is handed out again after this many seconds. Claims (scan.py) recover sooner than that.
VISIBILITY_TIMEOUT = 60


def transport_options(settings: Settings) -> dict[str, Any]:
    """The broker's transport options: the Redis transports' visibility timeout (other brokers ignore it), and
    the master's name for Celery's ``sentinel://`` broker."""
    options: dict[str, Any] = {"visibility_timeout": VISIBILITY_TIMEOUT}
    if urlsplit(settings.broker_url).scheme == "sentinel":
        options["master_name"] = settings.broker_sentinel_master
    return options


def create_app(settings: Settings | None = None) -> Celery:
    load_startup_hooks()  # before the settings' keyspaces import any python: source (Django's set-up)
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
        broker_transport_options=transport_options(settings),
        worker_hijack_root_logger=False,
        # Reconnect to the broker within about a second of it coming back (kombu's default waits up to 30 s).
        worker_consumer="cachewarm.worker.consumer:Consumer",
        task_queues=queues.cachewarm_queues(settings),
        task_routes=queues.routes(settings),
        beat_schedule={queues.SCAN_ENTRY: queues.scan_entry(settings)},
    )
    app.conf[tasks.SETTINGS_KEY] = settings
    tasks.register(app)
    sidecar_step.install(app)
    metrics_step.install(app)
    return app


app = create_app()


def app_settings() -> Settings:
    return tasks.settings_of(app)
