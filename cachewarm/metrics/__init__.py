"""Prometheus metrics: per-process counters (`process`), cluster-wide figures read from Redis (`cluster`),
multiprocess mode for prefork workers (`multiprocess`) and the endpoint (`server`). See docs/METRICS.md.

Importing this package does not import prometheus_client; the names below load their module on first use, so
a worker can switch prometheus_client to multiprocess mode first.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClusterCollector": "cluster",
    "PrometheusHooks": "process",
    "ProcessMetrics": "process",
    "register_process_metrics": "process",
    "start_metrics_server": "server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
