"""What the node's helper processes share: stopping a child process, and a stop flag set by SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
from types import FrameType
from typing import Any


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
