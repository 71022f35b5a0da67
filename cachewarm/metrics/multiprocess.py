"""prometheus_client's multiprocess mode for prefork workers: every child writes its counts to files in one
directory, and the process serving ``/metrics`` sums them.

prometheus_client picks its value class (plain or file-backed) when it is first imported and bakes it into every
metric created afterwards, so `enable()` must run before any cachewarm metric exists. cachewarm's own package
import never imports prometheus_client (hooks.py is the seam), so the worker's `worker_init` handler can call
`enable()` in the main process before the pool forks; the children inherit the directory through the environment.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"

_created: str | None = None


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def enable() -> str:
    """Switches this process (and the ones it forks) to multiprocess mode; returns the directory.

    An operator's PROMETHEUS_MULTIPROC_DIR is kept as it is (it must be emptied between runs); otherwise a fresh
    temporary directory is made for this worker node and removed by `cleanup()`.
    """
    global _created
    path = os.environ.get(ENV)
    if not path:
        path = _created = tempfile.mkdtemp(prefix="cachewarm-metrics-")
        os.environ[ENV] = path
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        # prometheus_client was imported before (by an application module, say): switch its value class now.
        # Correct as long as no metric was created yet, which is the contract of enable().
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]
    return path


def mark_dead(pid: int) -> None:
    """A child exited: its live gauges go, its counters stay in the sum."""
    path = os.environ.get(ENV)
    if path:
        from prometheus_client import multiprocess  # here, not at the top: see the module's docstring

        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def cleanup() -> None:
    """Removes the directory `enable()` made (never an operator's own)."""
    global _created
    if _created is not None:
        shutil.rmtree(_created, ignore_errors=True)
        if os.environ.get(ENV) == _created:
            del os.environ[ENV]
        _created = None
