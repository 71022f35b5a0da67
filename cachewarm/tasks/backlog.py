"""How much room the refresh queue has: its length, asked of the broker itself, whatever the broker.

The count is the ``message_count`` of a queue declare (kombu, on a channel of the app's own broker): for Redis,
kombu's virtual transport answers with the lengths of the queue's lists (``_size``: one pipelined round trip),
for AMQP the broker answers with its ready messages; both count messages waiting, not those a worker holds. The
declare is the ordinary (not passive) one with the app's own definition of the queue: a passive declare of an
empty Redis queue fails with NOT_FOUND (an empty list is no key), and declaring what the workers declare is a
no-op on every broker. Only cachewarm's refresh queue is counted, so a shared broker's other work never counts.

The connection is one per process, made lazily on the first scan of the process (pool children: after the fork),
kept across scans, with socket timeouts so that a dead broker costs a scan at most TIMEOUT. No thread. When the
count cannot be read, the scan enqueues at most UNKNOWN_ROOM_BATCHES batches (and says so in the log, once a
minute): warming goes on at a bounded rate, never floods the queue, never stops. The next scan reconnects.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

from ..settings import Settings

log = logging.getLogger(__name__)

# Refresh batches allowed to wait in the broker queue: enough to keep every worker busy for a scan period or
# more, few enough that a batch runs long before its keys' claims lapse (scan.claim_ms).
MAX_QUEUED_BATCHES = 20
# Batches a scan may enqueue when the queue's length cannot be read.
UNKNOWN_ROOM_BATCHES = 2
TIMEOUT = 2.0
WARN_EVERY = 60.0

_TIMEOUT_OPTIONS = {
    "redis": {"socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT},
    "amqp": {"read_timeout": TIMEOUT, "write_timeout": TIMEOUT},
}


class QueueLength:
    """One process's channel to the broker, for counting one queue."""

    def __init__(self, app: Any, queue_name: str) -> None:
        self.app = app
        self.queue_name = queue_name
        self.pid = os.getpid()
        self._connection: Any = None
        self._queue: Any = None

    def _open(self) -> Any:
        conn = self.app.connection_for_write(connect_timeout=TIMEOUT, heartbeat=0)
        conn.transport_options.update(_TIMEOUT_OPTIONS.get(conn.transport.driver_type, {}))
        queues = self.app.amqp.queues
        # The app's definition of the queue, without adding it to the app's queues (get, not [ ]).
        queue = queues.get(self.queue_name) or queues.new_missing(self.queue_name)
        self._connection = conn
        self._queue = queue.bind(conn.channel())
        return self._queue

    def read(self) -> int | None:
        """Messages waiting in the queue; None when the broker did not say (the connection is then dropped)."""
        try:
            queue = self._queue or self._open()
            return int(queue.queue_declare().message_count)
        except Exception as exc:  # any broker or transport error: the caller falls back, the next scan retries
            self.close()
            _warn(f"cachewarm scan: cannot read the length of queue {self.queue_name!r} ({exc!r}); enqueueing "
                  f"at most {UNKNOWN_ROOM_BATCHES} batches per scan until it can")
            return None

    def close(self) -> None:
        conn, self._connection, self._queue = self._connection, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


_lengths: dict[tuple[int, str], QueueLength] = {}
_last_warning = 0.0


def _warn(message: str) -> None:
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= WARN_EVERY or not _last_warning:
        _last_warning = now
        log.warning(message)


def queue_length(app: Any, queue_name: str) -> QueueLength:
    """This process's counter for `queue_name` on `app`'s broker (a new one after a fork: an inherited socket is
    the parent's and is left alone, never closed from here)."""
    key = (id(app), queue_name)
    length = _lengths.get(key)
    if length is None or length.pid != os.getpid():
        length = _lengths[key] = QueueLength(app, queue_name)
    return length


def room(app: Any, settings: Settings) -> int:
    """How many keys this scan may enqueue."""
    waiting = queue_length(app, settings.refresh_queue).read()
    batches = UNKNOWN_ROOM_BATCHES if waiting is None else max(0, MAX_QUEUED_BATCHES - waiting)
    return batches * settings.refresh_batch_size
