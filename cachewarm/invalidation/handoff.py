"""Handing hot keys from the invalidation consumer's process to the process that refreshes them, through a pipe.

The consumer runs in a process of its own (worker/invalidation_process.py) so that it never waits for a GIL held
by refresh work; the keys its events name go to the sidecar's refresh engine as lines of UTF-8 on a pipe (one key
a line: a key holds no control character, events.py refuses them).

`KeyPipeWriter` is the consumer's ``on_hot_keys``. Its end of the pipe is non-blocking: a write never waits for
the reader. What does not fit in the pipe now waits in the writer, each key once however many events name it
meanwhile (`backlog`; the consumer calls it again with no keys each round until it is empty), so a slow refresher
costs the consumer nothing and the writer's memory is bounded by the number of distinct keys. When the reader is
gone (the refresher's process died) the writer says so (`broken`) and the consumer's process exits: the keys not
yet handed over lose only their early refresh, never their invalidation (the consumer deleted their values
first, so the next reader loads them).

`KeyPipeReader` is the other end, a thread of the refresher's process calling ``deliver(keys)`` per read (each key
once per read); it ends at end of file (the consumer's process exited).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger("cachewarm.invalidation")

PIPE_SIZE = 1 << 20  # asked of Linux (F_SETPIPE_SZ); the default 64 KiB holds ~4,000 keys
READ_SIZE = 1 << 16


def _grow(fd: int) -> None:
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size for an unprivileged user
            fcntl.fcntl(fd, set_size, PIPE_SIZE)


class KeyPipeWriter:
    """The consumer's ``on_hot_keys``: writes keys to the pipe without ever blocking (see the module)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        _grow(fd)
        self._buf = bytearray()  # encoded lines, the front of which the pipe had no room for yet
        self._queued: dict[str, None] = {}  # keys named while _buf waited, each once
        self.broken = False
        self.sent = 0  # keys written to the pipe
        self.dropped = 0  # keys never handed over (the reader was gone, or a key with a line break)

    def __call__(self, keys: list[str]) -> None:
        for key in keys:
            if "\n" in key:
                self.dropped += 1
                log.warning("hot key %r not refreshed at once (a line break): the next reader loads it", key[:200])
            else:
                self._queued[key] = None
        self.flush()

    @property
    def backlog(self) -> int:
        """Keys (and bytes of a partly written line) still waiting for room in the pipe."""
        return len(self._queued) + len(self._buf)

    def flush(self) -> None:
        while not self.broken:
            if not self._buf:
                if not self._queued:
                    return
                self.sent += len(self._queued)
                self._buf += ("\n".join(self._queued) + "\n").encode("utf-8", "surrogateescape")
                self._queued.clear()
            try:
                written = os.write(self.fd, self._buf)
            except BlockingIOError:
                return
            except BrokenPipeError:
                self.broken = True
                self.dropped += len(self._queued) + self._buf.count(b"\n")
                self._queued.clear()
                self._buf.clear()
                log.warning("the hot-key refresher is gone: hot keys are left to their next reader")
                return
            del self._buf[:written]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class KeyPipeReader:
    """A thread reading keys from the pipe and handing each read's keys to `deliver` (each once per read)."""

    def __init__(self, fd: int, deliver: Callable[[list[str]], None], *, name: str = "cachewarm-hot-keys") -> None:
        self.fd = fd
        self.deliver = deliver
        self.received = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> KeyPipeReader:
        self._thread.start()
        return self

    def _run(self) -> None:
        rest = b""
        try:
            while True:
                chunk = os.read(self.fd, READ_SIZE)
                if not chunk:
                    return
                data = rest + chunk
                end = data.rfind(b"\n")
                if end < 0:
                    rest = data
                    continue
                rest = data[end + 1:]
                keys = list(dict.fromkeys(data[:end].decode("utf-8", "surrogateescape").split("\n")))
                self.received += len(keys)
                try:
                    self.deliver(keys)
                except Exception:
                    log.exception("hot-key refresh failed (the invalidations are applied)")
        except OSError as exc:
            log.debug("hot-key pipe closed: %s", exc)
        finally:
            with contextlib.suppress(OSError):
                os.close(self.fd)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
