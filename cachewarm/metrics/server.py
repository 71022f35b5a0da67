"""The ``/metrics`` endpoint of a worker node: the per-process counters of every process on the node (summed from
the multiprocess directory) plus the cluster-wide figures read from Redis at each scrape.

It binds ``settings.metrics_host`` (127.0.0.1 unless told otherwise) and ``settings.metrics_port`` (9808; 0 turns
the endpoint off, for a second worker node on the same machine). While it runs it also snapshots the read counters
every 10 s (history.py) for `cachewarm status --since`.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from prometheus_client import CollectorRegistry, disable_created_metrics, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from ..redis_layer.connections import sync_client
from ..redis_layer.keys import KeyLayout
from ..settings import Settings
from .cluster import ClusterCollector
from .history import HistoryRecorder
from .multiprocess import ENV
from .process import register_process_metrics

log = logging.getLogger(__name__)


def build_registry(settings: Settings) -> CollectorRegistry:
    """A registry exporting exactly cachewarm's metrics (no process_* or python_* series)."""
    registry = CollectorRegistry(auto_describe=False)
    # The cluster collector comes first: a Redis error during the scrape is then counted in the same scrape.
    registry.register(ClusterCollector.from_settings(settings))
    path = os.environ.get(ENV)
    if path:
        MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    else:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: the endpoint exports exactly cachewarm's metric names
        # Single process (e.g. `cachewarm run` with a solo pool): export this process's own metrics.
        metrics = register_process_metrics(None, keyspaces=settings.load_keyspaces().names())
        for metric in (metrics.refreshes, metrics.source_duration, metrics.source_errors, metrics.invalidations,
                       metrics.invalidation_lag, metrics.redis_errors, *metrics.audit_metrics()):
            registry.register(metric)
    return registry


class MetricsServer:
    """A running endpoint; `close()` stops it."""

    def __init__(self, httpd: Any, thread: threading.Thread, history: HistoryRecorder | None = None) -> None:
        self.httpd = httpd
        self.thread = thread
        self.history = history

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
        if self.history is not None:
            self.history.close()


def start_metrics_server(settings: Settings, *, registry: CollectorRegistry | None = None) -> MetricsServer | None:
    """Serves /metrics on the configured address; None when the port is 0 or already taken (logged)."""
    if settings.metrics_port == 0:
        return None
    registry = registry or build_registry(settings)
    try:
        httpd, thread = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    except OSError as exc:
        log.warning("cachewarm metrics endpoint not started on %s:%s: %s", settings.metrics_host,
                    settings.metrics_port, exc)
        return None
    log.info("cachewarm metrics at http://%s:%s/metrics", settings.metrics_host, settings.metrics_port)
    history = HistoryRecorder(sync_client(settings.redis_url, timeout=max(settings.redis_timeout, 1.0),
                                          cluster=settings.redis_cluster),
                              KeyLayout(settings.key_prefix), settings.load_keyspaces().names()).start()
    return MetricsServer(httpd, thread, history)
