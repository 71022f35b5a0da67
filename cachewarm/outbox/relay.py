"""The relay: moves outbox rows to the invalidation stream, at least once, in id order per batch.

One batch is: claim up to `batch_size` rows (locked for this relay: `dialects`), XADD their events in one
pipeline (`publish_events`, the same fields `publish_invalidation` writes, ``ts`` = the row's ``created_ms``),
then DELETE them by id and COMMIT. A row is deleted only after its XADD returned, so a relay killed in between
leaves it to be published again: a duplicate, harmless because applying an event twice is (versions).

Malformed rows (neither or both of key and tag, a bad key, a version on a tag ...) go to the dead-letter stream
with the reason and are deleted with the batch: counted, never blocking the rows behind them. When Redis or the
database fails, the batch is rolled back (its rows stay), one line is logged for the whole outage, and the relay
retries with exponential backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis as redis_py

from ..errors import CacheUnavailable
from ..invalidation.publish import event_fields, publish_events
from ..redis_layer.connections import REDIS_ERRORS, shared_client
from ..redis_layer.keys import DEAD_LETTER_STREAM
from ..settings import Settings
from .dialects import Dialect, OutboxDatabaseError, OutboxRecord, dialect_for
from .metrics import RelayObserver

log = logging.getLogger("cachewarm.outbox")

BACKOFF_START = 0.1
BACKOFF_MAX = 5.0
THREAD_NAME = "cachewarm-outbox-relay"
# publish_events raises CacheUnavailable; the dead-letter pipeline raises the client's own errors
_PUBLISH_FAILURES: tuple[type[Exception], ...] = (CacheUnavailable, *REDIS_ERRORS)


def _event_or_reason(record: OutboxRecord) -> dict[str, str] | str:
    if record.created_ms < 0:
        return f"created_ms must be a non-negative integer, got {record.created_ms}"
    try:
        return event_fields(record.key, tag=record.tag, version=record.version, ts_ms=record.created_ms)
    except ValueError as exc:
        return str(exc)


def _dead_fields(record: OutboxRecord, reason: str) -> dict[str, str]:
    fields = {"reason": reason, "outbox_id": str(record.id), "created_ms": str(record.created_ms)}
    for name, value in (("key", record.key), ("tag", record.tag), ("version", record.version)):
        if value is not None:
            fields[name] = str(value)[:4096]
    return fields


class Relay:
    """Relays one outbox database; `run_batch`/`drain` for a caller's own loop, `run`/`start` for the usual one."""

    def __init__(self, settings: Settings, *, url: str | None = None, redis: redis_py.Redis | None = None,
                 observer: RelayObserver | None = None, batch_size: int | None = None,
                 poll_interval: float | None = None) -> None:
        self.settings = settings
        self.url = url or settings.outbox_url
        self.dialect: Dialect = dialect_for(self.url)  # a ConfigError for a bad URL, before anything runs
        self.redis = redis
        self.observer = observer or RelayObserver()
        self.batch_size = batch_size or settings.outbox_batch_size
        self.poll_interval = poll_interval if poll_interval is not None else settings.outbox_poll_interval
        self.published = 0
        self.dead_lettered = 0
        self._connected = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- one batch ----
    def _ensure_connected(self) -> None:
        if not self._connected:
            self.dialect.connect()
            self._connected = True

    def run_batch(self) -> int:
        """Claims, publishes and deletes one batch; returns the rows it removed (0: the outbox was empty).
        Raises CacheUnavailable or OutboxDatabaseError with the batch rolled back."""
        self._ensure_connected()
        records = self.dialect.claim(self.batch_size)
        if not records:
            self.dialect.commit()
            return 0
        events: list[dict[str, str]] = []
        created: list[int] = []
        dead: list[tuple[OutboxRecord, str]] = []
        for record in records:
            made = _event_or_reason(record)
            if isinstance(made, str):
                dead.append((record, made))
            else:
                events.append(made)
                created.append(record.created_ms)
        try:
            if events:
                publish_events(events, redis=self.redis, settings=self.settings)
            published_ms = time.time() * 1000
            if dead:
                self._dead_letter(dead)
        except _PUBLISH_FAILURES:
            self._rollback()
            raise
        self.dialect.delete([r.id for r in records])
        self.dialect.commit()
        self.published += len(events)
        if events:
            self.observer.published([(published_ms - ms) / 1000 for ms in created])
        if dead:
            self.dead_lettered += len(dead)
            self.observer.dead(len(dead))
            for record, reason in dead:
                log.warning("cachewarm relay: outbox row %d dead-lettered: %s", record.id, reason)
        return len(records)

    def _dead_letter(self, dead: Sequence[tuple[OutboxRecord, str]]) -> None:
        client = self.redis or shared_client(self.settings.redis_url, timeout=max(self.settings.redis_timeout, 1.0),
                                             cluster=self.settings.redis_cluster)
        pipe = client.pipeline(transaction=False)
        for record, reason in dead:
            pipe.xadd(DEAD_LETTER_STREAM, _dead_fields(record, reason),  # type: ignore[arg-type]
                      maxlen=self.settings.stream_maxlen, approximate=True)
        pipe.execute()

    def _rollback(self) -> None:
        try:
            self.dialect.rollback()
        except OutboxDatabaseError:
            self._disconnect()

    def _disconnect(self) -> None:
        self.dialect.close()
        self._connected = False

    def drain(self) -> int:
        """Batches until the outbox is empty; returns the rows removed."""
        total = 0
        while not self._stop.is_set():
            moved = self.run_batch()
            total += moved
            if moved < self.batch_size:
                break
        return total

    # ---- the loop ----
    def run(self, stop: threading.Event | None = None) -> None:
        """Relays until `stop` (or `close()`): drain, wait for a notification or the poll interval, again."""
        stop = stop or self._stop
        if stop is not self._stop:
            self._stop = stop
        backoff = BACKOFF_START
        outage: str | None = None
        while not stop.is_set():
            try:
                self.drain()
                if outage is not None:
                    log.info("cachewarm relay: %s reachable again; relaying %s", outage, self.dialect.description)
                    outage, backoff = None, BACKOFF_START
                self.dialect.wait(self.poll_interval, stop)
                continue
            except CacheUnavailable as exc:
                failed, detail = "redis", str(exc)
            except REDIS_ERRORS as exc:  # (a cluster client's errors are not all RedisErrors)
                failed, detail = "redis", type(exc).__name__
            except OutboxDatabaseError as exc:
                failed, detail = "database", str(exc)
                self._disconnect()
            except Exception as exc:  # a bug must not stop the relay for good: say so, start afresh, retry
                log.exception("cachewarm relay: unexpected error")
                failed, detail = "relay", f"{type(exc).__name__}: {exc}"
                self._disconnect()
            self.observer.unavailable(failed)
            if outage != failed:
                log.warning("cachewarm relay: %s unavailable (%s); rows stay in the outbox, retrying with backoff",
                            failed, detail)
                outage = failed
            stop.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
        self._disconnect()

    def start(self) -> Relay:
        """Runs `run` in a daemon thread (the workers' sidecar)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=THREAD_NAME, daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        else:
            self._disconnect()

    def create_table(self) -> None:
        """Creates the outbox table (and on PostgreSQL its NOTIFY trigger) if missing."""
        self._ensure_connected()
        self.dialect.create_table()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
