"""SQLAlchemy 2: the rows a transaction changes become cache invalidations (extra ``cachewarm[sqlalchemy]``).

    from cachewarm.contrib.sqlalchemy import CacheInvalidator, outbox_table

    outbox = outbox_table(Base.metadata)            # cachewarm_outbox in your metadata (create_all / Alembic)
    invalidator = CacheInvalidator(table=outbox)    # mode="outbox" (default) or mode="publish"

    @invalidator.invalidates(keys=["product:{id}"], tags=["products"], version="version")
    class Product(Base): ...

    invalidator.install(Session)                    # a Session class, a sessionmaker, or one session

After each flush, every watched object that was inserted, changed or deleted gives its keys and tags (templates
over its attributes; a changed attribute also invalidates the key its old value made) with the version read from
its version attribute. Then:

- ``mode="outbox"``: the rows go to ``cachewarm_outbox`` on the flush's own connection, in the same transaction:
  published (by the relay) if and only if the transaction commits, whatever process dies when.
- ``mode="publish"``: they are XADDed after the commit (``after_commit``), dropped on rollback. One round trip per
  commit and no relay, but a process that dies between its commit and the XADD loses them (docs/WRITERS.md).

With ``AsyncSession``: install on the sync class it runs, e.g. ``class AppSession(Session): ...``,
``invalidator.install(AppSession)``, ``async_sessionmaker(engine, sync_session_class=AppSession)``.
"""

from __future__ import annotations

import logging
import string
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import redis as redis_py
from sqlalchemy import DDL, BigInteger, Column, Integer, MetaData, String, Table, event, insert, inspect
from sqlalchemy.orm import Session, UOWTransaction

from ..errors import CacheUnavailable
from ..invalidation.publish import event_fields, publish_events
from ..outbox.schema import MAX_TARGET_LENGTH, POSTGRES_NOTIFY_FUNCTION, POSTGRES_NOTIFY_TRIGGER, TABLE
from ..settings import Settings

log = logging.getLogger("cachewarm.contrib.sqlalchemy")

Mode = Literal["outbox", "publish"]
T = TypeVar("T", bound=type)
_PENDING = "cachewarm_pending_invalidations"
_FIELDS = string.Formatter()


def outbox_table(metadata: MetaData | None = None) -> Table:
    """The shared `cachewarm_outbox` table (outbox/schema.py) in `metadata`; on PostgreSQL `create_all` also
    creates the NOTIFY trigger that wakes the relays."""
    table = Table(
        TABLE, metadata if metadata is not None else MetaData(),
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("key", String(MAX_TARGET_LENGTH), nullable=True),
        Column("tag", String(MAX_TARGET_LENGTH), nullable=True),
        Column("version", BigInteger, nullable=True),
        Column("created_ms", BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    for statement in (POSTGRES_NOTIFY_FUNCTION, POSTGRES_NOTIFY_TRIGGER):
        ddl = DDL(statement)  # type: ignore[no-untyped-call]
        event.listen(table, "after_create", ddl.execute_if(dialect="postgresql"))
    return table


@dataclass(frozen=True, slots=True)
class Invalidates:
    """What a changed row of one model invalidates: key and tag templates over its attributes (``"product:{id}"``)
    and the attribute holding its version (an integer that grows with every change), if any."""

    keys: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    version: str | None = None

    def fields(self) -> set[str]:
        return {name for template in self.keys + self.tags for _, name, _, _ in _FIELDS.parse(template) if name}


class _Values(dict[str, Any]):
    """An object's attribute values for templates: current ones, or those before this flush (``old=True``)."""

    def __init__(self, obj: Any, names: Iterable[str], *, old: bool) -> None:
        super().__init__()
        state = inspect(obj)
        for name in names:
            value = getattr(obj, name)
            if old:
                history = state.attrs[name].history
                if history.deleted:
                    value = history.deleted[0]
            self[name] = value


Row = tuple[str | None, str | None, int | None]


class CacheInvalidator:
    """Collects the invalidations of watched models at each flush and records them (outbox) or publishes them
    after commit, as `mode` says."""

    def __init__(self, *, mode: Mode = "outbox", table: Table | None = None, settings: Settings | None = None,
                 redis: redis_py.Redis | None = None) -> None:
        if mode not in ("outbox", "publish"):
            raise ValueError(f"mode must be 'outbox' or 'publish', not {mode!r}")
        self.mode: Mode = mode
        self.table = table if table is not None else outbox_table()
        self.settings = settings
        self.redis = redis
        self._specs: dict[type, Invalidates] = {}

    # ---- declaring ----
    def watch(self, model: type, *, keys: Iterable[str] = (), tags: Iterable[str] = (),
              version: str | None = None) -> None:
        spec = Invalidates(tuple(keys), tuple(tags), version)
        if not spec.keys and not spec.tags:
            raise ValueError(f"{model.__name__}: give at least one key or tag template")
        attributes: set[str] = set(inspect(model).attrs.keys())
        missing = sorted((spec.fields() | ({version} if version else set())) - attributes)
        if missing:
            raise ValueError(f"{model.__name__} has no attribute(s) {', '.join(missing)}")
        self._specs[model] = spec

    def invalidates(self, *, keys: Iterable[str] = (), tags: Iterable[str] = (),
                    version: str | None = None) -> Callable[[T], T]:
        """`watch` as a class decorator."""
        def decorate(model: T) -> T:
            self.watch(model, keys=keys, tags=tags, version=version)
            return model
        return decorate

    # ---- hooking ----
    def install(self, target: Any) -> None:
        """Listens on `target`: a Session (sub)class, a sessionmaker, a scoped_session or one Session."""
        event.listen(target, "after_flush", self._after_flush)
        if self.mode == "publish":
            event.listen(target, "after_commit", self._after_commit)
            event.listen(target, "after_rollback", self._after_rollback)

    def uninstall(self, target: Any) -> None:
        event.remove(target, "after_flush", self._after_flush)
        if self.mode == "publish":
            event.remove(target, "after_commit", self._after_commit)
            event.remove(target, "after_rollback", self._after_rollback)

    def _spec(self, obj: Any) -> Invalidates | None:
        for cls in type(obj).__mro__:
            spec = self._specs.get(cls)
            if spec is not None:
                return spec
        return None

    def rows_for(self, session: Session) -> list[Row]:
        """The (key, tag, version) rows of the watched objects this flush writes, one per key or tag (for a key
        named twice, the highest version)."""
        found: dict[tuple[str | None, str | None], int | None] = {}
        # (session.dirty is a new set at each access, and holds objects whose changes cancelled out)
        for dirty, changed in ((False, session.new), (True, session.dirty), (False, session.deleted)):
            for obj in changed:
                spec = self._spec(obj)
                if spec is None or (dirty and not session.is_modified(obj)):
                    continue
                version = getattr(obj, spec.version) if spec.version else None
                names = spec.fields()
                current = _Values(obj, names, old=False)
                variants = [current]
                if dirty:
                    old = _Values(obj, names, old=True)
                    if old != current:
                        variants.append(old)
                for values in variants:
                    for template in spec.keys:
                        key = (template.format_map(values), None)
                        previous = found.get(key)
                        found[key] = version if previous is None or (version or 0) > previous else previous
                    for template in spec.tags:
                        found[(None, template.format_map(values))] = None
        return [(key, tag, version) for (key, tag), version in found.items()]

    def _after_flush(self, session: Session, flush_context: UOWTransaction) -> None:
        rows = self.rows_for(session)
        if not rows:
            return
        now_ms = int(time.time() * 1000)
        events = [event_fields(key, tag=tag, version=version, ts_ms=now_ms) for key, tag, version in rows]
        if self.mode == "outbox":
            session.connection().execute(insert(self.table), [
                {"key": f.get("key"), "tag": f.get("tag"), "version": v, "created_ms": now_ms}
                for f, (_, _, v) in zip(events, rows, strict=True)])
        else:
            session.info.setdefault(_PENDING, []).extend(events)

    def _after_commit(self, session: Session) -> None:
        events = session.info.pop(_PENDING, None)
        if not events:
            return
        try:
            publish_events(events, redis=self.redis, settings=self.settings)
        except CacheUnavailable as exc:
            # Committed already: nothing to undo. The keys stay cached until their TTL (the outbox has no such gap).
            log.error("cachewarm: %d invalidation(s) of a committed transaction not published: %s", len(events), exc)

    def _after_rollback(self, session: Session) -> None:
        session.info.pop(_PENDING, None)
