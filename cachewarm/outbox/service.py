"""Starting a relay inside a long-running process (the workers' sidecar), with its metrics when they are served."""

from __future__ import annotations

import logging

from ..settings import Settings
from .metrics import RelayObserver
from .relay import Relay

log = logging.getLogger("cachewarm.outbox")


def start_relay(settings: Settings, *, serve_metrics: bool) -> Relay:
    """A relay of `settings.outbox_url` running in a daemon thread; a bad URL raises ConfigError first."""
    observer = RelayObserver()
    if serve_metrics:
        from .metrics import prometheus_observer

        observer = prometheus_observer()
    relay = Relay(settings, observer=observer).start()
    log.info("cachewarm outbox relay started on %s", relay.dialect.description)
    return relay
