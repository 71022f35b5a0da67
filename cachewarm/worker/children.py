"""What the node's helper processes share: their `main` (arguments, logging, start, the loop that watches the
parent, stop), stopping a child process, and a stop flag set by SIGTERM/SIGINT.

The sidecar (sidecar.py) and the invalidation consumer's process (invalidation_process.py) are each started with
fork + exec by their parent (the worker's main process, the sidecar), exit within about a second of it, exit
with CONFIG_ERROR when their configuration is wrong (not restarted then), and stop cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from ..config.sources import load_startup_hooks
from ..errors import CONFIG_ERROR, ConfigError

__all__ = ["CONFIG_ERROR", "Service", "child_main", "stop_child", "stop_on_signals"]

PARENT_CHECK_INTERVAL = 1.0
# Python's default 5 ms switch interval lets one thread keep the GIL that long while another waits: in the sidecar
# the engine's thread, while the hot-key pipe's reader waits with a key to hand over (at 1 ms, 7 interleaved pairs
# of 500 events/s runs, issue 12: new-value p99 95 against 135 ms at the median, better in 5 of 7 pairs; del p99
# better in 6); in the consumer's process the waking main thread, while the consumer's thread is the one that matters.
SWITCH_INTERVAL = 0.001


class Service(Protocol):
    """What a helper process runs, once started."""

    def tick(self) -> int | None:
        """Called at once and then every PARENT_CHECK_INTERVAL: None to go on, else the exit status."""

    def close(self) -> None:
        """Stops it (whatever ended the loop, an exception too)."""


def child_main(argv: list[str] | None, *, module: str, name: str, parent_name: str, description: str,
               log_format: str, log: logging.Logger, metrics_help: str,
               start: Callable[[argparse.Namespace], Service],
               add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """The `main` of a helper process (``python -m cachewarm.worker.MODULE --parent PID``): parses the common
    options (and `add_arguments`'), sets up logging, starts the service (`start`; a ConfigError is one logged line
    and CONFIG_ERROR), then ticks it until SIGTERM/SIGINT, the parent's exit (its pid is no longer ours'
    parent's), or an exit status from the service; closes it whatever happened."""
    parser = argparse.ArgumentParser(prog=f"python -m cachewarm.worker.{module}", description=description)
    parser.add_argument("--parent", type=int, default=0, help="exit when this process is gone (0: never)")
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--no-metrics", action="store_true", help=metrics_help)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.loglevel.upper(), format=log_format, stream=sys.stderr)
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))  # a line per request
    sys.setswitchinterval(SWITCH_INTERVAL)

    stop = stop_on_signals()
    try:
        load_startup_hooks()  # before the keyspaces import any python: source (Django's set-up)
        service = start(args)
    except ConfigError as exc:
        log.error("cachewarm %s not started: %s", name, exc)
        return CONFIG_ERROR
    try:
        while True:
            status = service.tick()
            if status is not None:
                return status
            if args.parent and os.getppid() != args.parent:
                log.warning("cachewarm %s: %s %d is gone; exiting", name, parent_name, args.parent)
                return 0
            if stop.wait(PARENT_CHECK_INTERVAL):
                return 0
    finally:
        service.close()


def stop_child(proc: subprocess.Popen[Any], timeout: float, name: str, log: logging.Logger) -> None:
    """SIGTERM, then SIGKILL if `proc` has not exited within `timeout` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop within %g s; killed", name, timeout)
        proc.kill()
        proc.wait(5)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (a process's main loop waits on it)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    return stop
