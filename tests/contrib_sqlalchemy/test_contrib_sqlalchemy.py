"""cachewarm.contrib.sqlalchemy on SQLite and a real PostgreSQL, against a real redis-server: the flush hook's rows
(keys and tags from the mapping, version from the column, old keys of changed attributes), written in the
transaction (outbox) or published after commit, nothing for a rollback; the table's NOTIFY trigger; AsyncSession."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from cachewarm import Settings
from cachewarm.contrib.sqlalchemy import CacheInvalidator, outbox_table
from cachewarm.outbox.relay import Relay
from cachewarm.redis_layer.keys import INVALIDATION_STREAM
from tests.support.postgres import shared_postgres

pytestmark = pytest.mark.timeout(60)


class Base(DeclarativeBase):
    pass


OUTBOX = outbox_table(Base.metadata)


class Product(Base):
    __tablename__ = "products"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(default=1)
    __mapper_args__ = {"version_id_col": version}


class Note(Base):  # not watched
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(100))


def _watch(invalidator: CacheInvalidator) -> CacheInvalidator:
    invalidator.watch(Product, keys=["product:{id}", "product-slug:{slug}"], tags=["products"], version="version")
    return invalidator


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'app.db'}"
    else:
        url = shared_postgres().create_database().replace("postgresql://", "postgresql+psycopg://")
    made = create_engine(url)
    Base.metadata.create_all(made)
    yield made
    made.dispose()


def outbox_rows(engine: Engine) -> list[tuple[str | None, str | None, int | None]]:
    with engine.connect() as conn:
        return [(r.key, r.tag, r.version) for r in conn.execute(select(OUTBOX).order_by(OUTBOX.c.id))]


def test_outbox_mode_writes_rows_in_the_transaction(engine: Engine) -> None:
    factory = sessionmaker(engine)
    _watch(CacheInvalidator(table=OUTBOX)).install(factory)
    with factory() as session:
        session.add_all([Product(id=1, slug="laptop", name="Laptop"), Note(id=1, text="not watched")])
        session.commit()
    assert outbox_rows(engine) == [("product:1", None, 1), ("product-slug:laptop", None, 1), (None, "products", None)]

    with factory() as session:
        product = session.get(Product, 1)
        assert product is not None
        product.slug = "notebook"  # the old slug's key is invalidated too
        session.commit()
    assert outbox_rows(engine)[3:] == [("product:1", None, 2), ("product-slug:notebook", None, 2),
                                       (None, "products", None), ("product-slug:laptop", None, 2)]

    with factory() as session:
        product = session.get(Product, 1)
        assert product is not None
        product.name = "rolled back"
        session.flush()
        session.rollback()
    assert len(outbox_rows(engine)) == 7

    with factory() as session:
        session.delete(session.get(Product, 1))
        session.commit()
    assert outbox_rows(engine)[7:] == [("product:1", None, 2), ("product-slug:notebook", None, 2),
                                       (None, "products", None)]


def test_outbox_rows_reach_the_stream_through_the_relay(engine: Engine, redis_url: str,
                                                       redis_client: redis.Redis) -> None:
    factory = sessionmaker(engine)
    _watch(CacheInvalidator(table=OUTBOX)).install(factory)
    with factory() as session:
        session.add(Product(id=5, slug="hub", name="Hub"))
        session.commit()
    url = engine.url.render_as_string(hide_password=False)
    with Relay(Settings.load(redis_url=redis_url, outbox_url=url)) as relay:
        assert relay.drain() == 3
    fields = [{k.decode(): v.decode() for k, v in f.items()} for _, f in redis_client.xrange(INVALIDATION_STREAM)]
    assert [(f.get("key"), f.get("tag"), f.get("version")) for f in fields] == [
        ("product:5", None, "1"), ("product-slug:hub", None, "1"), (None, "products", None)]


def test_publish_mode_publishes_after_commit_only(engine: Engine, redis_url: str,
                                                  redis_client: redis.Redis) -> None:
    factory = sessionmaker(engine)
    invalidator = _watch(CacheInvalidator(mode="publish", settings=Settings.load(redis_url=redis_url)))
    invalidator.install(factory)
    with factory() as session:
        session.add(Product(id=2, slug="kb", name="Keyboard"))
        session.flush()
        assert redis_client.xlen(INVALIDATION_STREAM) == 0  # not before the commit
        session.commit()
    assert redis_client.xlen(INVALIDATION_STREAM) == 3
    with factory() as session:
        product = session.get(Product, 2)
        assert product is not None
        product.name = "never"
        session.flush()
        session.rollback()
    assert redis_client.xlen(INVALIDATION_STREAM) == 3
    assert outbox_rows(engine) == []  # publish mode writes no outbox rows


def test_publish_mode_with_redis_down_commits_and_logs(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    factory = sessionmaker(engine)
    closed = Settings.load(redis_url="redis://127.0.0.1:1/0")
    _watch(CacheInvalidator(mode="publish", settings=closed)).install(factory)
    with caplog.at_level(logging.ERROR), factory() as session:
        session.add(Product(id=3, slug="x", name="X"))
        session.commit()
    with factory() as session:
        assert session.get(Product, 3) is not None
    assert any("not published" in r.message for r in caplog.records)


def test_postgres_create_all_makes_the_notify_trigger() -> None:
    import psycopg

    url = shared_postgres().create_database()
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        Base.metadata.create_all(engine)
        with psycopg.connect(url, autocommit=True) as listener:
            listener.execute("LISTEN cachewarm_outbox")
            with Session(engine) as session:
                session.execute(OUTBOX.insert().values(key="product:1", created_ms=1))
                session.commit()
            assert [n.channel for n in listener.notifies(timeout=5, stop_after=1)] == ["cachewarm_outbox"]
    finally:
        engine.dispose()


def test_watch_refuses_unknown_attributes_and_empty_mappings() -> None:
    invalidator = CacheInvalidator()
    with pytest.raises(ValueError, match="no attribute"):
        invalidator.watch(Product, keys=["product:{sku}"])
    with pytest.raises(ValueError, match="no attribute"):
        invalidator.watch(Product, keys=["product:{id}"], version="revision")
    with pytest.raises(ValueError, match="at least one"):
        invalidator.watch(Product)
    with pytest.raises(ValueError, match="mode"):
        CacheInvalidator(mode="later")  # type: ignore[arg-type]


async def test_async_session_through_its_sync_class(tmp_path: Path) -> None:
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    class AppSession(Session):
        pass

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        _watch(CacheInvalidator(table=OUTBOX)).install(AppSession)
        factory = async_sessionmaker(engine, sync_session_class=AppSession)
        async with factory() as session:
            session.add(Product(id=9, slug="cable", name="Cable"))
            await session.commit()
        async with engine.connect() as conn:
            rows = (await conn.execute(select(OUTBOX.c.key, OUTBOX.c.tag))).all()
        assert [tuple(r) for r in rows] == [("product:9", None), ("product-slug:cable", None), (None, "products")]
    finally:
        await engine.dispose()
