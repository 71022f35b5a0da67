"""FastAPI over a product database, read through cachewarm and written through the transactional outbox.

Products live in a database through SQLAlchemy (SQLite file by default; PostgreSQL with
EXAMPLE_DATABASE_URL=postgresql+psycopg://...). Reads go through `AsyncCache` (stampede protection, negative
caching, Redis-outage fallback); `PUT /products/{id}` updates the row and, in the same transaction, writes the
product's invalidations (key ``product:{id}`` with the row's version, tag ``products``) to ``cachewarm_outbox``
(cachewarm.contrib.sqlalchemy). A relay moves them to the invalidation stream and a consumer applies them: the
workers do both when CACHEWARM_OUTBOX_URL names this database; with EXAMPLE_RELAY=1 (the default) this process
runs them too, so that the example works alone.

Run it (a redis-server must listen on CACHEWARM_REDIS_URL, default redis://127.0.0.1:6379/0):

    .venv/bin/uvicorn examples.fastapi_products:app --port 8001
    curl -s localhost:8001/products/1    # {"source": "Database", "response_time": "2.0031 seconds", ...}
    curl -s localhost:8001/products/1    # {"source": "Redis Cache", "response_time": "0.0004 seconds", ...}
    curl -s -X PUT localhost:8001/products/1 -H 'content-type: application/json' -d '{"price": 899.0}'
    curl -s localhost:8001/products/1    # "Database" again, with price 899.0 and version 2

EXAMPLE_DB_LATENCY (seconds, default 2) adds a simulated slow query to each database read (0: none).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy import Engine, String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from cachewarm import AsyncCache, Settings
from cachewarm.config.keyspaces import KeyspaceRegistry
from cachewarm.contrib.sqlalchemy import CacheInvalidator, outbox_table
from cachewarm.invalidation.consumer import InvalidationConsumer
from cachewarm.outbox.relay import Relay

DEFAULT_DATABASE_URL = "sqlite:///./example_products.db"

PRODUCTS: dict[int, dict[str, Any]] = {
    1: {"id": 1, "name": "Laptop", "price": 999.99, "stock": 12},
    2: {"id": 2, "name": "Mechanical keyboard", "price": 129.0, "stock": 40},
    3: {"id": 3, "name": "USB-C hub", "price": 39.5, "stock": 0},
}

# One keyspace: "product:{product_id}" is loaded by load_product below and lives 60 s in Redis; its version field
# keeps an older row from ever replacing a newer one. In an application it usually lives in CACHEWARM_CONFIG's file.
KEYSPACES = {
    "product": {
        "pattern": "product:{product_id}",
        "source": f"python:{__name__}:load_product",
        "ttl": 60,
        "tags": ["products"],
        "version_field": "version",
    },
}


class Base(DeclarativeBase):
    pass


OUTBOX = outbox_table(Base.metadata)


class Product(Base):
    __tablename__ = "products"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    price: Mapped[float]
    stock: Mapped[int]
    version: Mapped[int] = mapped_column(default=1)
    __mapper_args__ = {"version_id_col": version}

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "price": self.price, "stock": self.stock, "version": self.version}


invalidator = CacheInvalidator(table=OUTBOX)  # mode="outbox": the rows go in the update's own transaction
invalidator.watch(Product, keys=["product:{id}"], tags=["products"], version="version")


class AppSession(Session):
    """The example's sessions: each flush that changes a Product records its invalidations."""


invalidator.install(AppSession)


class ProductChange(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    price: float | None = Field(None, ge=0)
    stock: int | None = Field(None, ge=0)


_sessions: sessionmaker[AppSession] | None = None


def open_database(url: str) -> Engine:
    """Creates the tables (and the outbox) if missing, seeds PRODUCTS into an empty table."""
    global _sessions
    engine: Engine = create_engine(url)
    Base.metadata.create_all(engine)
    _sessions = sessionmaker(engine, class_=AppSession, expire_on_commit=False)
    with Session(engine) as session:  # a plain Session: seeding invalidates nothing
        if not session.scalar(select(func.count()).select_from(Product)):
            session.add_all(Product(**row) for row in PRODUCTS.values())
            session.commit()
    return engine


@contextmanager
def session_scope() -> Iterator[AppSession]:
    if _sessions is None:
        raise RuntimeError("the example's database is not open (create_app's lifespan opens it)")
    with _sessions() as session:
        yield session


def load_product(product_id: str) -> dict[str, Any] | None:
    """The (optionally slow) query. None means "no such product" (cachewarm remembers that briefly too)."""
    time.sleep(float(os.environ.get("EXAMPLE_DB_LATENCY", "2")))
    if not product_id.isdigit():
        return None
    with session_scope() as session:
        product = session.get(Product, int(product_id))
        return product.as_dict() if product is not None else None


def create_app(settings: Settings | None = None, *, database_url: str | None = None,
               run_relay: bool | None = None) -> FastAPI:
    url = database_url or os.environ.get("EXAMPLE_DATABASE_URL", DEFAULT_DATABASE_URL)
    relay_here = run_relay if run_relay is not None else os.environ.get("EXAMPLE_RELAY", "1") != "0"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Its own key prefix unless one is set: the README's tour runs workers for `product:` keys on the same
        # Redis, and they would refresh this example's products from the tour's source.
        own_prefix = {} if "CACHEWARM_KEY_PREFIX" in os.environ else {"key_prefix": "example:"}
        config = settings or Settings.load(**own_prefix)
        keyspaces = KeyspaceRegistry.from_mapping(KEYSPACES)
        engine = open_database(url)
        cache = AsyncCache(settings=config, keyspaces=keyspaces)
        app.state.cache = cache
        services: list[Any] = []
        if relay_here:  # what the workers' sidecar does when CACHEWARM_OUTBOX_URL is set
            services.append(Relay(config.model_copy(update={"outbox_url": url})).start())
            services.append(InvalidationConsumer(config, keyspaces=keyspaces, block_ms=100).start())
        try:
            yield
        finally:
            for service in services:
                service.close()
            await cache.aclose()
            engine.dispose()

    app = FastAPI(title="cachewarm FastAPI example", lifespan=lifespan)

    @app.get("/products/{product_id}")
    async def get_product(product_id: int, request: Request) -> dict[str, Any]:
        cache: AsyncCache = request.app.state.cache
        started = time.perf_counter()
        found = await cache.lookup(f"product:{product_id}")
        elapsed = time.perf_counter() - started
        if found.value is None:
            raise HTTPException(status_code=404, detail=f"product {product_id} not found")
        return {
            "source": "Redis Cache" if found.hit else "Database",
            "response_time": f"{elapsed:.4f} seconds",
            "product": found.value,
        }

    @app.put("/products/{product_id}")
    def update_product(product_id: int, change: ProductChange) -> dict[str, Any]:
        """Updates the row; its invalidation is committed with it (a sync endpoint: FastAPI runs it in a thread)."""
        with session_scope() as session:
            product = session.get(Product, product_id)
            if product is None:
                raise HTTPException(status_code=404, detail=f"product {product_id} not found")
            for name, value in change.model_dump(exclude_none=True).items():
                setattr(product, name, value)
            session.commit()
            return {"product": product.as_dict()}

    @app.post("/products/{product_id}/invalidate")
    async def invalidate(product_id: int, request: Request) -> dict[str, Any]:
        """Drops the cached copy at once (in-process; other processes use publish_invalidation or the outbox)."""
        cache: AsyncCache = request.app.state.cache
        return {"deleted": await cache.delete(f"product:{product_id}")}

    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("EXAMPLE_PORT", "8001")))
