"""The relay's seam to a database: claim a batch of outbox rows, delete them, commit, wait for more.

Plain DB-API drivers (psycopg 3, the standard library's sqlite3), not SQLAlchemy: the relay runs in the workers'
sidecar and as `cachewarm relay`, where an ORM would add start-up time and a dependency for four statements.

- PostgreSQL: ``SELECT ... ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED``: several relays take disjoint batches
  and none waits for another; a second connection LISTENs on the channel the insert trigger NOTIFYs, so a relay
  wakes within a round trip of a writer's commit (and polls every `POSTGRES_SAFETY_POLL` s in case a notification
  was missed, e.g. rows written while the relay was reconnecting).
- SQLite: ``BEGIN IMMEDIATE`` takes the database's one write lock before reading, so two relays never read the
  same rows; there are no notifications, so the relay polls.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError
from ..redis_layer.urls import mask_url
from .schema import NOTIFY_CHANNEL, POSTGRES_STATEMENTS, SQLITE_STATEMENTS, TABLE

POSTGRES_SAFETY_POLL = 5.0
NOTIFY_SLICE = 0.5  # a wait checks its stop event this often
SQLITE_BUSY_TIMEOUT = 5.0
_SELECT = f"SELECT id, key, tag, version, created_ms FROM {TABLE} ORDER BY id LIMIT "


class OutboxDatabaseError(Exception):
    """The outbox database could not be reached or refused a statement (the relay reconnects and retries)."""


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One row as the relay read it."""

    id: int
    key: str | None
    tag: str | None
    version: int | None
    created_ms: int


class Dialect(Protocol):
    """One relay's connection(s) to one outbox database. Every method raises OutboxDatabaseError on failure."""

    description: str  # the masked URL, for log lines

    def connect(self) -> None: ...

    def close(self) -> None: ...

    def create_table(self) -> None: ...

    def claim(self, limit: int) -> list[OutboxRecord]: ...

    def delete(self, ids: Sequence[int]) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def wait(self, timeout: float, stop: threading.Event) -> None: ...


def _records(rows: Sequence[Sequence[Any]]) -> list[OutboxRecord]:
    return [OutboxRecord(int(r[0]), r[1], r[2], None if r[3] is None else int(r[3]), int(r[4])) for r in rows]


class PostgresDialect:
    def __init__(self, conninfo: str, description: str) -> None:
        self.conninfo = conninfo
        self.description = description
        self._conn: Any = None
        self._listen: Any = None

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        import psycopg

        try:
            return fn(*args)
        except psycopg.Error as exc:
            raise OutboxDatabaseError(f"{what}: {type(exc).__name__}: {str(exc).strip()[:200]}") from None

    def connect(self) -> None:
        import psycopg

        def open_both() -> None:
            # LISTEN before the first claim: a commit between the two is then a queued notification, not a miss.
            self._listen = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
            self._listen.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._conn = psycopg.connect(self.conninfo, autocommit=False, connect_timeout=5)
            # The relay's commits only delete rows already published: one lost in a database crash publishes
            # them again (harmless), so they need not wait for the WAL flush that holds up the next batch.
            self._conn.execute("SET synchronous_commit TO off")
            self._conn.commit()

        try:
            self._call("connect", open_both)
        except OutboxDatabaseError:
            self.close()
            raise

    def close(self) -> None:
        for conn in (self._conn, self._listen):
            if conn is not None:
                with contextlib.suppress(Exception):  # closing a broken connection may fail: nothing to do
                    conn.close()
        self._conn = self._listen = None

    def create_table(self) -> None:
        def create() -> None:
            for statement in POSTGRES_STATEMENTS:
                self._conn.execute(statement)
            self._conn.commit()

        self._call("create table", create)

    def claim(self, limit: int) -> list[OutboxRecord]:
        rows = self._call("claim", lambda: self._conn.execute(
            _SELECT + "%s FOR UPDATE SKIP LOCKED", (limit,)).fetchall())
        return _records(rows)

    def delete(self, ids: Sequence[int]) -> None:
        self._call("delete", self._conn.execute, f"DELETE FROM {TABLE} WHERE id = ANY(%s)", (list(ids),))

    def commit(self) -> None:
        self._call("commit", self._conn.commit)

    def rollback(self) -> None:
        if self._conn is not None:
            self._call("rollback", self._conn.rollback)

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Returns at the first notification (all queued ones consumed), after the safety poll's
        `POSTGRES_SAFETY_POLL` s, or soon after `stop`. (`timeout`, the SQLite poll interval, is not used.)"""
        remaining = POSTGRES_SAFETY_POLL
        while remaining > 0 and not stop.is_set():
            slice_ = min(remaining, NOTIFY_SLICE)
            got = self._call("wait", lambda s=slice_: list(self._listen.notifies(timeout=s, stop_after=1)))
            if got:
                self._call("wait", lambda: list(self._listen.notifies(timeout=0)))  # drain the rest
                return
            remaining -= slice_


class SqliteDialect:
    def __init__(self, path: str, description: str) -> None:
        self.path = path
        self.description = description
        self._conn: Any = None

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        import sqlite3

        try:
            return fn(*args)
        except sqlite3.Error as exc:
            raise OutboxDatabaseError(f"{what}: {type(exc).__name__}: {exc}") from None

    def connect(self) -> None:
        import sqlite3

        # Autocommit mode: the relay writes BEGIN IMMEDIATE itself. The connection is used by one thread at a time.
        self._conn = self._call("connect", lambda: sqlite3.connect(
            self.path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def create_table(self) -> None:
        for statement in SQLITE_STATEMENTS:
            self._call("create table", self._conn.execute, statement)

    def claim(self, limit: int) -> list[OutboxRecord]:
        def select() -> list[Any]:
            self._conn.execute("BEGIN IMMEDIATE")
            return list(self._conn.execute(_SELECT + "?", (limit,)).fetchall())

        return _records(self._call("claim", select))

    def delete(self, ids: Sequence[int]) -> None:
        marks = ",".join("?" * len(ids))
        self._call("delete", self._conn.execute, f"DELETE FROM {TABLE} WHERE id IN ({marks})", tuple(ids))

    def commit(self) -> None:
        self._call("commit", self._conn.execute, "COMMIT")

    def rollback(self) -> None:
        if self._conn is not None and self._conn.in_transaction:
            self._call("rollback", self._conn.execute, "ROLLBACK")

    def wait(self, timeout: float, stop: threading.Event) -> None:
        stop.wait(timeout)


def dialect_for(url: str) -> Dialect:
    """The dialect of an SQLAlchemy-style URL: ``postgresql[+driver]://...`` or ``sqlite:///path``
    (``sqlite:////abs/path`` for an absolute path). Raises ConfigError naming CACHEWARM_OUTBOX_URL."""
    scheme, _, rest = url.partition("://")
    base = scheme.split("+", 1)[0].lower()
    if base in ("postgresql", "postgres"):
        parts = urlsplit(url)
        if not parts.path.strip("/"):
            raise ConfigError(f"CACHEWARM_OUTBOX_URL: {mask_url(url)} names no database")
        if importlib.util.find_spec("psycopg") is None:
            raise ConfigError("CACHEWARM_OUTBOX_URL: a PostgreSQL outbox needs psycopg 3 "
                              "(pip install 'cachewarm[postgresql]')")
        return PostgresDialect("postgresql://" + rest, mask_url(url))
    if base == "sqlite":
        if not rest.startswith("/") or len(rest) < 2:
            raise ConfigError(f"CACHEWARM_OUTBOX_URL: {url} names no file (sqlite:///relative or sqlite:////absolute)")
        path = unquote(rest[1:].split("?", 1)[0])
        if path in (":memory:", ""):
            raise ConfigError("CACHEWARM_OUTBOX_URL: an in-memory SQLite database cannot be shared with a relay")
        return SqliteDialect(path, url)
    raise ConfigError(f"CACHEWARM_OUTBOX_URL: unsupported scheme {scheme!r} (postgresql://... or sqlite:///path)")
