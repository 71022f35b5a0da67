"""The worker node's sidecar process: its invalidation consumer, its ``/metrics`` endpoint and its auditor.

Celery's main process forks: the embedded beat (``-B``) and the pool's children at start, and a new child
whenever one exits (``--max-tasks-per-child``, a crash). A fork copies every lock of the parent, held ones too, but
only the thread that forked: a lock some other thread held at that moment (an import lock, a connection pool's, a
logging handler's) stays held in the child forever, and the child blocks on it the first time it needs it. That is
how a `worker -B` used to start with a dead beat about one time in five: the consumer's thread was importing a
codec as the beat forked. So the main process runs no thread of cachewarm's; the services that need threads run
here, in a process of their own that is started with fork + exec (`subprocess`, nothing inherited but the
environment) and forks nothing but that same way. Its refresh engine (for the hot keys the consumer names) is
its own too.

The invalidation consumer itself runs in one more process, the sidecar's child (invalidation_process.py, fork +
exec again), so that its round trips never wait for a GIL held by the engine's refresh work; it hands the hot keys
its events name to the engine here through a pipe, read by a thread of this process.

Started and stopped by `sidecar_step.SidecarStep`; it also exits within about a second when its worker is gone
(a kill -9 of the main process), and its consumer's process within about a second of it, leaving their
unacknowledged entries pending for another consumer to claim.
Run by hand for a look: ``python -m cachewarm.worker.sidecar --parent PID``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Self

from ..audit.service import AuditService
from ..metrics import multiprocess
from ..outbox.service import start_relay
from ..settings import Settings
from ..warming import refresh_engine
from ..warming.heartbeat import NodeBeat
from ..warming.hot_refresh import HotRefresher
from .children import child_main
from .invalidation_process import ConsumerProcess

if TYPE_CHECKING:
    from ..metrics.server import MetricsServer
    from ..outbox.relay import Relay

log = logging.getLogger("cachewarm.sidecar")

LOG_FORMAT = "[%(asctime)s: %(levelname)s/cachewarm-sidecar] %(message)s"
# How long the engine may take at exit to finish the hot-key refreshes it started.
DRAIN_TIMEOUT = 20.0
CONSUMER_ENV = "CACHEWARM_INVALIDATION_CONSUMER"


def consumer_enabled() -> bool:
    """`CACHEWARM_INVALIDATION_CONSUMER=0` turns the consumer off for a node (one that should only refresh)."""
    return os.environ.get(CONSUMER_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def engine_refresher(settings: Settings) -> HotRefresher:
    """Hot keys refreshed by this process's refresh engine."""
    # Each consumer batch's hot keys are their own refresh batch, started at once. (Coalescing the keys handed
    # while the engine is busy into one bigger batch was measured: worse tails, the big batch hogs the GIL.) No
    # pipeline window: an invalidated key's new value is waited for, and the window's timer is two more wake-ups
    # of this process per refresh (its lease and its write) on a busy machine.
    def engine() -> refresh_engine.RefreshEngine:
        return refresh_engine.get_engine(settings, flush_window=0.0)

    def defer(then: Callable[[], None]) -> None:
        engine().loop.call_soon_threadsafe(then)

    return HotRefresher(lambda keys, watch: engine().submit(keys, force=True, watch=watch), defer=defer)


class Sidecar:
    """The node's services: the invalidation consumer's process (handing hot keys to this process's refresh
    engine), the metrics endpoint (summing every process of the node through the multiprocess directory) and the
    outbox relay."""

    def __init__(self, settings: Settings, *, consume: bool = True, serve_metrics: bool = True,
                 loglevel: str = "INFO") -> None:
        self.settings = settings
        self.consume = consume
        self.serve_metrics = serve_metrics
        self.loglevel = loglevel
        self.consumer: ConsumerProcess | None = None
        self.refresher: HotRefresher | None = None
        self._server: MetricsServer | None = None
        self.relay: Relay | None = None
        self.auditor: AuditService | None = None

    def start(self) -> Self:
        keyspaces = self.settings.load_keyspaces()  # a ConfigError here stops the sidecar before anything runs
        if self.serve_metrics:
            # Imported only when serving: prometheus_client fixes its process mode when first imported.
            from ..metrics.process import register_process_metrics
            from ..metrics.server import start_metrics_server

            register_process_metrics(None, keyspaces=keyspaces.names())
            self._server = start_metrics_server(self.settings)
        if self.settings.outbox_url:  # the outbox relay (cachewarm/outbox): a thread here, never in the main process
            self.relay = start_relay(self.settings, serve_metrics=self.serve_metrics)
        if self.consume:
            self.refresher = engine_refresher(self.settings)
            self.consumer = ConsumerProcess(self.refresher, loglevel=self.loglevel,
                                            metrics=self.serve_metrics).start()
        else:
            log.info("cachewarm invalidation consumer disabled (%s=0)", CONSUMER_ENV)
        # The consistency auditor (cachewarm/audit/): threads here; repaired hot keys go to the same refresher.
        if self.refresher is None:
            self.refresher = engine_refresher(self.settings)
        self.auditor = AuditService(self.settings, refresh=self.refresher).start()
        return self

    def check(self) -> None:
        """Starts the consumer's process again if it died."""
        if self.consumer is not None:
            self.consumer.check()

    def close(self) -> None:
        if self.auditor is not None:
            self.auditor.close()
            self.auditor = None
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        if self.refresher is not None:
            self.refresher.close()
            self.refresher = None
        refresh_engine.drain_engine(DRAIN_TIMEOUT)
        server, self._server = self._server, None
        if server is not None:
            server.close()
        multiprocess.mark_dead(os.getpid())


class _Node:
    """The sidecar's services and the node's heartbeat, as `children.child_main` runs them."""

    def __init__(self, args: argparse.Namespace) -> None:
        settings = Settings.load()
        self.sidecar = Sidecar(settings, consume=consumer_enabled(), serve_metrics=not args.no_metrics,
                               loglevel=args.loglevel.upper()).start()
        self.node = NodeBeat.for_settings(settings, args.parent)  # the node's heartbeat, for `cachewarm status`

    def tick(self) -> None:
        self.node.beat()
        self.sidecar.check()

    def close(self) -> None:
        self.node.close()
        self.sidecar.close()


def main(argv: list[str] | None = None) -> int:
    return child_main(argv, module="sidecar", name="sidecar", parent_name="worker",
                      description=(__doc__ or "").split("\n")[0], log_format=LOG_FORMAT, log=log,
                      metrics_help="do not serve /metrics", start=_Node)


if __name__ == "__main__":
    sys.exit(main())
