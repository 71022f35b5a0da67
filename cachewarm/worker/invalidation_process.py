"""The node's invalidation consumer in a process of its own, started by the sidecar (sidecar.py).

Until issue 12 the consumer was a thread of the sidecar, beside the refresh engine that refreshes the hot keys it
names; at 500 events/s the engine's refresh CPU held the GIL and the consumer's round trips waited behind it (del
p99 34 ms). Here it shares a GIL with nothing: this process runs the consumer loop (invalidation/consumer.py) and
nothing else, and hands the hot keys to the sidecar's refresh engine through a pipe (invalidation/handoff.py: the
write never blocks; keys waiting for room coalesce).

Started by the sidecar with fork + exec (`subprocess`, nothing inherited but the environment and the pipe's
write end, ``--hot-fd``), started again by it if it dies (its unacknowledged entries stay pending and are claimed
after ``claim_idle_ms`` by the restarted consumer), and gone within about a second of the sidecar (a kill -9 of
it: its parent changes), or at once when the sidecar's end of the pipe is closed (the refresher is gone: the
keys not handed over are left to their next reader, their values are already deleted). SIGTERM stops it cleanly:
the last batch's acknowledgements are sent first. Its metrics go to the node's multiprocess directory.

    python -m cachewarm.worker.invalidation_process --parent PID [--hot-fd FD] [--no-metrics]
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Self

from ..invalidation.consumer import InvalidationConsumer
from ..invalidation.handoff import KeyPipeReader, KeyPipeWriter
from ..metrics import multiprocess
from ..settings import Settings
from .children import CONFIG_ERROR, child_main, stop_child

log = logging.getLogger("cachewarm.sidecar")

LOG_FORMAT = "[%(asctime)s: %(levelname)s/cachewarm-invalidation] %(message)s"
STOP_TIMEOUT = 10.0


class ConsumerProcess:
    """The sidecar's side: starts the consumer's process with a pipe for the hot keys, reads the pipe in a thread
    (handing each read's keys to `on_hot_keys`, the sidecar's HotRefresher), starts the process again if it
    exited (not after a configuration error), and stops it."""

    def __init__(self, on_hot_keys: Callable[[list[str]], None] | None, *, loglevel: str = "INFO",
                 metrics: bool = True) -> None:
        self.on_hot_keys = on_hot_keys
        self.loglevel = loglevel
        self.metrics = metrics
        self.process: subprocess.Popen[bytes] | None = None
        self.reader: KeyPipeReader | None = None
        self.restarts = 0

    def start(self) -> Self:
        read_fd: int | None = None
        write_fd: int | None = None
        if self.on_hot_keys is not None:
            read_fd, write_fd = os.pipe()  # neither end inheritable: only pass_fds gives the child its end
        try:
            self.process = subprocess.Popen(command(os.getpid(), write_fd, self.loglevel, metrics=self.metrics),
                                            pass_fds=() if write_fd is None else (write_fd,))
        except BaseException:
            for fd in (read_fd, write_fd):
                if fd is not None:
                    os.close(fd)
            raise
        if write_fd is not None:
            os.close(write_fd)  # the child's now: end of file here when it exits
        if read_fd is not None and self.on_hot_keys is not None:
            self.reader = KeyPipeReader(read_fd, self.on_hot_keys).start()
        log.info("cachewarm invalidation consumer process started (pid %d)", self.process.pid)
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def check(self) -> None:
        """Starts the process again if it exited (not after a configuration error)."""
        proc = self.process
        if proc is None or proc.poll() is None:
            return
        if self.reader is not None:
            self.reader.join(5)
            self.reader = None
        if proc.returncode == CONFIG_ERROR:
            log.error("cachewarm invalidation consumer exited on a configuration error; not restarted")
            self.process = None
            return
        log.warning("cachewarm invalidation consumer (pid %d) exited with %s; starting it again", proc.pid,
                    proc.returncode)
        self.restarts += 1
        self.start()

    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            stop_child(proc, timeout, "cachewarm invalidation consumer", log)
        if self.reader is not None:  # end of file now that the child is gone: the keys it wrote are delivered
            self.reader.join(5)
            self.reader = None


def command(parent: int, hot_fd: int | None, loglevel: str, *, metrics: bool) -> list[str]:
    cmd = [sys.executable, "-m", "cachewarm.worker.invalidation_process", "--parent", str(parent),
           "--loglevel", loglevel]
    if hot_fd is not None:
        cmd += ["--hot-fd", str(hot_fd)]
    if not metrics:
        cmd.append("--no-metrics")
    return cmd


class _Consumer:
    """The consumer and its end of the hot-key pipe, as `children.child_main` runs them."""

    def __init__(self, args: argparse.Namespace) -> None:
        settings = Settings.load()
        keyspaces = settings.load_keyspaces()
        self.metrics = not args.no_metrics
        if self.metrics and multiprocess.enabled():
            from ..metrics.process import register_process_metrics  # fixes prometheus_client's mode: imported late

            register_process_metrics(None, keyspaces=keyspaces.names())
        self.writer = KeyPipeWriter(args.hot_fd) if args.hot_fd is not None else None
        self.consumer = InvalidationConsumer(settings, keyspaces=keyspaces, on_hot_keys=self.writer).start()
        log.info("cachewarm invalidation consumer %s started", self.consumer.name)

    def tick(self) -> int | None:
        if self.writer is not None and self.writer.broken:
            log.warning("cachewarm invalidation consumer: the hot-key refresher is gone; exiting")
            return 0
        if not self.consumer.alive:
            log.error("cachewarm invalidation consumer: the consumer thread ended; exiting")
            return 1
        return None

    def close(self) -> None:
        self.consumer.close()  # sends the last batch's acknowledgements
        if self.writer is not None:
            self.writer.close()
        if self.metrics:
            multiprocess.mark_dead(os.getpid())


def _hot_fd(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hot-fd", type=int, default=None, help="write end of the hot-key pipe (none: no refresh)")


def main(argv: list[str] | None = None) -> int:
    return child_main(argv, module="invalidation_process", name="invalidation consumer", parent_name="sidecar",
                      description=(__doc__ or "").split("\n")[0], log_format=LOG_FORMAT, log=log,
                      metrics_help="count nothing into the multiprocess directory", start=_Consumer,
                      add_arguments=_hot_fd)


if __name__ == "__main__":
    sys.exit(main())
