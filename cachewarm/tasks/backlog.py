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

The room is also bounded by what the workers take: a claim lives scan.claim_ms (4 scan periods), and a batch that
waits in the queue longer than that has its keys claimed and enqueued again by a later scan (the second copy only
costs, its keys are skipped as not due: 9,000-12,000 skipped per 20,000 refreshed in refresh_throughput, issue 12).
Each scan records in Redis (``scan:queue``: when, and how many batches it left queued); the next one reads how many
the workers took since. While the queue is not empty the workers were busy the whole time, so that is their rate;
the scan then fills the queue to QUEUE_PERIODS scan periods of it at most (a worker also holds a few batches it
took: MAX_IN_FLIGHT and the prefetch, tasks/refresh.py, which wait inside it). An emptied queue only says the rate
is at least what they took: the target grows by QUEUE_PERIODS a scan. Without a record (the first scan), or after
a scan that left nothing queued with nothing waiting (idle workers: a new wave of due keys, rate unknown),
`first_batches`: FIRST_KEYS keys at most (at most FIRST_BATCHES batches), however large the batches.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from typing import Any

import redis

from ..settings import Settings

log = logging.getLogger(__name__)

# Refresh batches allowed to wait in the broker queue: enough to keep every worker busy for a scan period or
# more, few enough that a batch runs long before its keys' claims lapse (scan.claim_ms).
MAX_QUEUED_BATCHES = 20
# Batches a scan may enqueue when the queue's length cannot be read.
UNKNOWN_ROOM_BATCHES = 2
TIMEOUT = 2.0
WARN_EVERY = 60.0
# Scan periods of the workers' measured rate a busy queue is filled to at most (claims live 4: scan.claim_ms).
QUEUE_PERIODS = 1.5
# Batches the first scan of a wave (no record of a previous one, or idle workers) fills an empty queue to: the
# rate is not known yet; the next scans grow it (an emptied queue: QUEUE_PERIODS times what was taken per period).
# At most FIRST_BATCHES, and no more than FIRST_KEYS keys: an idle queue used to get MAX_QUEUED_BATCHES, which in
# batches of 500 (10,000 keys) outlived their claims (refresh_throughput: 1,700-2,250 keys enqueued twice per
# 20,000, under load).
FIRST_BATCHES = 8
FIRST_KEYS = 1600

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


class Room:
    """How many keys a scan may enqueue (`keys`); `record` after enqueueing writes what the next scan measures
    the workers' rate against."""

    def __init__(self, keys: int, waiting: int | None, client: redis.Redis | None, settings: Settings) -> None:
        self.keys = keys
        self.waiting = waiting
        self.client = client
        self.settings = settings

    def record(self, enqueued: int) -> None:
        if self.client is None or self.waiting is None:
            return
        with contextlib.suppress(redis.RedisError):
            self.client.set(record_key(self.settings), f"{_now_ms()} {self.waiting + enqueued}",
                            px=max(1000, int(self.settings.scan_interval * 10_000)))


def record_key(settings: Settings) -> str:
    return settings.key_prefix + "scan:queue"


def _now_ms() -> int:
    """Wall clock (scans may run on several hosts: a skew between them only blurs one measurement)."""
    return int(time.time() * 1000)


def first_batches(settings: Settings) -> int:
    """Batches the first scan of a wave fills an empty queue to: FIRST_BATCHES, or fewer when they would hold
    more than FIRST_KEYS keys."""
    return max(1, min(FIRST_BATCHES, math.ceil(FIRST_KEYS / settings.refresh_batch_size)))


def busy_target(settings: Settings, waiting: int, previous: bytes | None, now_ms: int) -> int:
    """Batches the queue may hold: QUEUE_PERIODS scan periods of the workers' rate measured since the previous
    scan's record (an emptied queue: the rate is at least that, so the target grows by QUEUE_PERIODS);
    `first_batches` without a record, or when the previous scan left nothing queued and nothing waits."""
    if not previous:
        return first_batches(settings)
    try:
        then_ms, queued = (int(part) for part in previous.split())
    except ValueError:
        return first_batches(settings)
    elapsed = (now_ms - then_ms) / 1000
    if not waiting and not queued:
        return first_batches(settings)
    # An elapsed time of 0 or less (a scan in the same millisecond as the previous one's record, or a clock behind
    # the recording host's) counts as half a period, like any short one: it used to allow MAX_QUEUED_BATCHES, and
    # two scans in one millisecond filled a queue nobody was taking from (a CI run under load).
    taken = max(0, queued - waiting)
    per_period = taken * settings.scan_interval / max(elapsed, settings.scan_interval / 2)
    return min(MAX_QUEUED_BATCHES, math.ceil(QUEUE_PERIODS * per_period))


def measure(app: Any, settings: Settings, client: redis.Redis | None = None) -> Room:
    """This scan's room; with `client` (the cache's Redis) bounded by the workers' measured rate."""
    waiting = queue_length(app, settings.refresh_queue).read()
    if waiting is None:
        return Room(UNKNOWN_ROOM_BATCHES * settings.refresh_batch_size, None, None, settings)
    target = MAX_QUEUED_BATCHES
    if client is not None:
        try:
            previous: bytes | None = client.get(record_key(settings))  # type: ignore[assignment]
            target = busy_target(settings, waiting, previous, _now_ms())
        except redis.RedisError:
            client = None
    return Room(max(0, target - waiting) * settings.refresh_batch_size, waiting, client, settings)


def room(app: Any, settings: Settings) -> int:
    """How many keys this scan may enqueue (the queue's length only)."""
    return measure(app, settings).keys
