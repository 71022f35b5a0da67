"""The outbox tests' databases: a fresh SQLite file or PostgreSQL database per test, DB-API connections to it."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cachewarm.outbox.schema import POSTGRES_STATEMENTS, SQLITE_STATEMENTS
from tests.support.postgres import shared_postgres

BACKENDS = ("sqlite", "postgresql")


def new_database(backend: str, tmp_path: Path) -> str:
    """A URL of an empty database holding the outbox table."""
    url = f"sqlite:///{tmp_path / 'app.db'}" if backend == "sqlite" else shared_postgres().create_database()
    with connect(url) as (conn, _):
        for statement in SQLITE_STATEMENTS if backend == "sqlite" else POSTGRES_STATEMENTS:
            conn.execute(statement)
        conn.commit()
    return url


@contextlib.contextmanager
def connect(url: str) -> Iterator[tuple[Any, str]]:
    """A DB-API connection to `url` and its parameter style, closed on exit."""
    if url.startswith("sqlite"):
        conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=10)
        style = "qmark"
    else:
        import psycopg

        conn, style = psycopg.connect(url), "format"
    try:
        yield conn, style
    finally:
        conn.close()


def outbox_count(url: str) -> int:
    with connect(url) as (conn, _):
        return int(conn.execute("SELECT count(*) FROM cachewarm_outbox").fetchone()[0])
