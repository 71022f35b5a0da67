"""How a Django writer's invalidations leave its transaction: ``outbox`` or ``on_commit``.

- ``outbox``: rows in ``cachewarm_outbox``, inserted on the writer's own connection, so inside its transaction:
  committed with the change or rolled back with it, then published by the relay even if this process dies right
  after its commit. One INSERT per call (the rows of one save go together). Outside ``atomic()`` (autocommit) the
  row commits just after the change: a crash between the two loses the invalidation, as ``on_commit`` would.
- ``on_commit``: the events are XADDed after the transaction commits (nothing for a rolled-back one, nor for a
  rolled-back savepoint), all the events of one transaction in one pipeline, so one Redis round trip per commit
  however many rows it saved. A process that dies between its commit and the XADD loses them: the cache keeps the
  old value until its TTL. A Redis error is logged, not raised (the commit has happened; raising would only stop
  the transaction's other on-commit callbacks).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

from django.db import connections, transaction

from ...errors import CacheUnavailable
from ...invalidation.publish import event_fields, publish_events
from ...outbox.schema import COLUMNS, TABLE
from ...outbox.writes import outbox_row
from .conf import cachewarm_settings

log = logging.getLogger("cachewarm.contrib.django")

Via = Literal["outbox", "on_commit"]
VIAS: tuple[Via, ...] = ("outbox", "on_commit")
# One invalidation: (key, tag, version), exactly one of key and tag.
Target = tuple[str | None, str | None, int | None]


def deliver(targets: Sequence[Target], *, via: Via, using: str) -> None:
    """Sends `targets` the way `via` says, for the transaction now open on database `using`. Bad input (a key
    cachewarm refuses, a version on a tag) raises ValueError here, inside the writer's transaction."""
    if not targets:
        return
    if via == "outbox":
        write_rows(targets, using)
    elif via == "on_commit":
        publish_on_commit([event_fields(key, tag=tag, version=version) for key, tag, version in targets], using)
    else:
        raise ValueError(f"via must be one of {', '.join(VIAS)}, not {via!r}")


def write_rows(targets: Sequence[Target], using: str) -> None:
    """One multi-row INSERT on the writer's connection (the model's table, the shared schema). Plain SQL rather
    than ``bulk_create``: the same statement without the ORM's per-object work or PostgreSQL's RETURNING."""
    rows = [outbox_row(key, tag=tag, version=version) for key, tag, version in targets]
    connection = connections[using]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(name) for name in COLUMNS[1:])
    values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {quote(TABLE)} ({columns}) VALUES {values}", [v for row in rows for v in row])


class PendingEvents:
    """The on-commit callback of one transaction (one savepoint level of it): the events it will publish."""

    def __init__(self, events: list[dict[str, str]] | None = None) -> None:
        self.events: list[dict[str, str]] = events or []

    def __call__(self) -> None:
        events, self.events = self.events, []
        try:
            publish_events(events, settings=cachewarm_settings())
        except CacheUnavailable as exc:
            log.error("cachewarm: %d invalidation(s) of a committed transaction not published: %s (the cache keeps "
                      "the old values until their TTL; the outbox would have kept them)", len(events), exc)


def publish_on_commit(events: list[dict[str, str]], using: str) -> None:
    connection = connections[using]
    if not connection.in_atomic_block:  # autocommit: the change is already committed
        PendingEvents(events)()
        return
    pending = _open_pending(connection)
    if pending is None:
        pending = PendingEvents()
        transaction.on_commit(pending, using=using)
    pending.events.extend(events)


def _open_pending(connection: Any) -> PendingEvents | None:
    """This transaction's callback registered at the current savepoint level, if any. Django keeps the callbacks
    with the savepoints open when each was registered (``run_on_commit``: (savepoint ids, callback, robust)) and
    drops those of a savepoint rolled back, so joining a callback of the same level publishes exactly what
    commits."""
    current = set(connection.savepoint_ids)
    for entry in reversed(getattr(connection, "run_on_commit", ())):
        sids, callback = entry[0], entry[1]
        if isinstance(callback, PendingEvents):
            return callback if sids == current else None
    return None
