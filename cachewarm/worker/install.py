"""`install(app)`: cachewarm inside a team's existing Celery app, in one call from the project's ``celery.py``.

What it adds to the app, and only to it:
- the tasks ``cachewarm.refresh`` and ``cachewarm.scan``, each carrying its own options (JSON serialization
  whatever the app's ``task_serializer``, acks late for the idempotent refresh, no result);
- cachewarm's routes ahead of the app's own ``task_routes`` (a catch-all route of the team's cannot take them);
- the scan's entry in ``beat_schedule``, so that the team's beat runs it (django-celery-beat's DatabaseScheduler
  copies ``beat_schedule`` into its table when beat starts; periodic.py creates the row for a data migration);
- the sidecar bootstep (invalidation consumer, metrics endpoint) and the metrics signals, active only on a worker
  node that consumes cachewarm's refresh queue: the team's own workers are left as they were;
- with ``fast_reconnect=True`` only, cachewarm's broker consumer (consumer.py) as ``worker_consumer``.
Nothing else: not the serializer, acks, prefetch, visibility timeout, logging, nor the queues the app's workers
consume. The settings are applied once the app's configuration is read (``on_after_configure``: a Django
project's ``config_from_object`` may come later than this call), and again whenever it is read again. At worker
start, one log line names what was set.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from .. import tasks
from ..config.sources import load_startup_hooks
from ..settings import Settings
from . import metrics_step, queues, sidecar_step

log = logging.getLogger("cachewarm.install")

CELERY_CONSUMER = "celery.worker.consumer:Consumer"
CACHEWARM_CONSUMER = "cachewarm.worker.consumer:Consumer"
JSON = {"json", "application/json"}


class Installation:
    """cachewarm in one app: applies its settings after each configuration and names them at worker start."""

    def __init__(self, app: Celery, settings: Settings, *, beat: bool, fast_reconnect: bool) -> None:
        self.app: Any = app
        self.settings = settings
        self.beat = beat
        self.fast_reconnect = fast_reconnect
        self.changes: list[str] = []

    def configure(self, **_: Any) -> None:
        conf = self.app.conf
        conf[tasks.SETTINGS_KEY] = self.settings
        changes = []
        ours = queues.routes(self.settings)
        current = conf.task_routes
        theirs = list(current) if isinstance(current, list | tuple) else [current] if current else []
        if not theirs or theirs[0] != ours:
            conf.task_routes = [ours, *theirs]
        changes.append("task_routes (" + ", ".join(f"{task} -> {route['queue']}" for task, route in ours.items())
                       + ", ahead of the app's)")
        if self.beat:
            schedule = dict(conf.beat_schedule or {})
            if queues.SCAN_ENTRY in schedule and schedule[queues.SCAN_ENTRY] != queues.scan_entry(self.settings):
                changes.append(f"beat_schedule[{queues.SCAN_ENTRY!r}] left as the app has it")
            else:
                schedule[queues.SCAN_ENTRY] = queues.scan_entry(self.settings)
                conf.beat_schedule = schedule
                changes.append(f"beat_schedule[{queues.SCAN_ENTRY!r}] (every {self.settings.scan_interval:g} s)")
        if self.fast_reconnect:
            if conf.worker_consumer in (CELERY_CONSUMER, CACHEWARM_CONSUMER):
                conf.worker_consumer = CACHEWARM_CONSUMER
                changes.append(f"worker_consumer ({CACHEWARM_CONSUMER})")
            else:
                changes.append(f"worker_consumer left as the app has it ({conf.worker_consumer})")
        self.changes = changes

    def announce(self, sender: Any = None, instance: Any = None, **_: Any) -> None:
        """At each worker start of this app (``celeryd_after_setup``, once logging is set up): one line."""
        if id(getattr(instance, "app", None)) != id(self.app):
            return
        node = "runs cachewarm" if queues.runs_cachewarm(instance) else \
            f"does not consume {self.settings.refresh_queue!r}: no cachewarm sidecar here"
        accepted = set(self.app.conf.accept_content or ())
        risk = "" if accepted <= JSON else (f"; WARNING: the app accepts {sorted(accepted - JSON)}, so cachewarm's "
                                            "queues do too (cachewarm sends JSON only: accept_content=['json'])")
        log.warning("cachewarm installed into Celery app %r: set %s; no other setting changed; this worker %s%s",
                    self.app.main, "; ".join(self.changes), node, risk)


def install(app: Celery, settings: Settings | None = None, *, beat: bool = True,
            fast_reconnect: bool = False) -> Settings:
    """Adds cachewarm to `app` (see the module's docstring); returns the settings it uses (by default from the
    environment, ``CACHEWARM_*``). Workers that should refresh are started on cachewarm's queues:
    ``celery -A proj worker -Q cachewarm.refresh,cachewarm.scan`` (`settings.refresh_queue`, `.scan_queue`).
    `beat=False` leaves ``beat_schedule`` alone (the scan then comes from elsewhere: a database scheduler's row,
    cachewarm's own beat)."""
    load_startup_hooks()  # before the settings' keyspaces import any python: source (Django's set-up)
    settings = settings or Settings.load()
    installation = Installation(app, settings, beat=beat, fast_reconnect=fast_reconnect)
    tasks.register(app)
    sidecar_step.install(app)
    metrics_step.install(app)
    app.on_after_configure.connect(installation.configure, weak=False)
    if app.configured:
        installation.configure()
    signals.celeryd_after_setup.connect(installation.announce, weak=False,
                                        dispatch_uid=f"cachewarm.install.{id(app)}")
    return settings
