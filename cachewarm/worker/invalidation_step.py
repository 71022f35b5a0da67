"""Runs the invalidation consumer inside each Celery worker's main process (a bootstep of the worker blueprint).

Every worker node is one consumer of the `cachewarm-workers` group (named hostname:pid); the pool children do not
consume. Hot keys the events name are refreshed at once through the process's refresh engine
(cachewarm.refresh_engine) when it exists, else by a read through a Cache. `CACHEWARM_INVALIDATION_CONSUMER=0`
turns the consumer off for a worker (e.g. a node that should only refresh).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

import celery
from celery import bootsteps

from ..errors import ConfigError
from ..settings import Settings

log = logging.getLogger(__name__)


def _enabled() -> bool:
    return os.environ.get("CACHEWARM_INVALIDATION_CONSUMER", "1").strip().lower() not in ("0", "false", "no", "off")


class InvalidationConsumerStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Starts the consumer thread when the worker starts; stops it (unacknowledged entries stay pending) at the
    worker's shutdown."""

    label = "cachewarm invalidation consumer"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.consumer: Any = None
        self.refresher: Any = None

    def start(self, parent: Any) -> None:
        if not _enabled():
            log.info("cachewarm invalidation consumer disabled (CACHEWARM_INVALIDATION_CONSUMER=0)")
            return
        from ..invalidation.consumer import HotRefresher, InvalidationConsumer

        try:
            settings = Settings.load()
            keyspaces = settings.keyspaces
        except ConfigError as exc:
            log.error("cachewarm invalidation consumer not started: %s", exc)
            return
        if importlib.util.find_spec("cachewarm.refresh_engine") is not None:
            self.refresher = HotRefresher.for_engine(settings)
        else:
            from ..client import Cache

            self.refresher = HotRefresher.for_cache(Cache(settings=settings, keyspaces=keyspaces))
        self.consumer = InvalidationConsumer(settings, keyspaces=keyspaces, on_hot_keys=self.refresher)
        self.consumer.start()
        log.info("cachewarm invalidation consumer %s started", self.consumer.name)

    def stop(self, parent: Any) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        if self.refresher is not None:
            self.refresher.close()
            self.refresher = None

    shutdown = stop


def install(app: celery.Celery) -> None:
    """Adds the invalidation consumer to the app's workers."""
    app.steps["worker"].add(InvalidationConsumerStep)
