"""FastAPI over a slow product database, read through cachewarm: the classic "Redis cache in front of a slow
query" tutorial, with stampede protection, negative caching and Redis-outage fallback for free.

Run it (a redis-server must listen on CACHEWARM_REDIS_URL, default redis://127.0.0.1:6379/0):

    .venv/bin/uvicorn examples.fastapi_products:app --port 8001
    curl -s localhost:8001/products/1    # {"source": "Database", "response_time": "2.0031 seconds", ...}
    curl -s localhost:8001/products/1    # {"source": "Redis Cache", "response_time": "0.0004 seconds", ...}

The database's latency is EXAMPLE_DB_LATENCY seconds (default 2). The keyspace is declared in code here; in an
application it usually lives in the TOML file named by CACHEWARM_CONFIG.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from cachewarm import AsyncCache, Settings
from cachewarm.keyspaces import KeyspaceRegistry

PRODUCTS: dict[int, dict[str, Any]] = {
    1: {"id": 1, "name": "Laptop", "price": 999.99, "stock": 12},
    2: {"id": 2, "name": "Mechanical keyboard", "price": 129.0, "stock": 40},
    3: {"id": 3, "name": "USB-C hub", "price": 39.5, "stock": 0},
}

# One keyspace: "product:{product_id}" is loaded by load_product below and lives 60 s in Redis.
KEYSPACES = {
    "product": {
        "pattern": "product:{product_id}",
        "source": f"python:{__name__}:load_product",
        "ttl": 60,
        "tags": ["products"],
    },
}


async def load_product(product_id: str) -> dict[str, Any] | None:
    """The slow query. None means "no such product" (cachewarm remembers that briefly too)."""
    await asyncio.sleep(float(os.environ.get("EXAMPLE_DB_LATENCY", "2")))
    if not product_id.isdigit():
        return None
    return PRODUCTS.get(int(product_id))


def create_app(settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cache = AsyncCache(settings=settings or Settings.load(),
                           keyspaces=KeyspaceRegistry.from_mapping(KEYSPACES))
        app.state.cache = cache
        try:
            yield
        finally:
            await cache.aclose()

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

    @app.post("/products/{product_id}/invalidate")
    async def invalidate(product_id: int, request: Request) -> dict[str, Any]:
        """What a writer does after changing a product (in-process; other processes use publish_invalidation)."""
        cache: AsyncCache = request.app.state.cache
        return {"deleted": await cache.delete(f"product:{product_id}")}

    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("EXAMPLE_PORT", "8001")))
