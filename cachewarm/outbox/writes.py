"""Writing outbox rows through any DB-API connection (the ORM integrations use their own table objects).

Rows are checked as they are written, the way `publish_invalidation` checks its arguments, so that a writer's
mistake fails its own transaction instead of reaching the relay (which would dead-letter it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..invalidation.publish import event_fields
from .schema import TABLE

# One row: (key, tag, version, created_ms), the columns the writer fills (id comes from the database).
Row = tuple[str | None, str | None, int | None, int]

_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def outbox_row(key: str | None = None, *, tag: str | None = None, version: int | None = None,
               created_ms: int | None = None) -> Row:
    """One checked row; raises ValueError as `publish_invalidation` does (exactly one of key and tag, ...)."""
    fields = event_fields(key, tag=tag, version=version, ts_ms=created_ms)
    return (fields.get("key"), fields.get("tag"), version, int(fields["ts"]))


def insert_sql(paramstyle: str) -> str:
    """The INSERT for one row in a positional parameter style (sqlite3: qmark, psycopg: format)."""
    if paramstyle not in _PLACEHOLDERS:
        raise ValueError(f"paramstyle must be one of {', '.join(_PLACEHOLDERS)}, not {paramstyle!r}")
    marks = ", ".join([_PLACEHOLDERS[paramstyle]] * 4)
    return f"INSERT INTO {TABLE} (key, tag, version, created_ms) VALUES ({marks})"


def write_outbox(cursor: Any, rows: Iterable[Row], *, paramstyle: str = "format") -> None:
    """Inserts rows with `cursor` (any DB-API cursor or connection with executemany) in the caller's transaction:
    they are published if and only if that transaction commits."""
    values = list(rows)
    if not values:
        return
    cursor.executemany(insert_sql(paramstyle), values)
