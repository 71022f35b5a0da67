"""The FastAPI example through an ASGI client against a real redis-server and a real database (SQLite, and the
test PostgreSQL): first Database, then Redis Cache; a PUT goes through the outbox, the relay and the consumer
running in the app, and the next read shows the new row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from cachewarm import Cache, Settings
from examples import fastapi_products
from tests.support.postgres import shared_postgres

pytestmark = pytest.mark.timeout(60)


def seeded(product_id: int) -> dict[str, object]:
    return {**fastapi_products.PRODUCTS[product_id], "version": 1}


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the default; the outbox test runs on PostgreSQL too


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'products.db'}"
    return shared_postgres().create_database().replace("postgresql://", "postgresql+psycopg://")


@pytest.fixture
async def client(redis_url: str, tmp_path: Path, database_url: str,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("EXAMPLE_DB_LATENCY", "0.2")
    settings = Settings.load(redis_url=redis_url, config=tmp_path / "none.toml", outbox_poll_interval=0.02)
    app: FastAPI = fastapi_products.create_app(settings, database_url=database_url, run_relay=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://example") as http:
            yield http


async def test_first_read_from_the_database_then_from_redis(client: httpx.AsyncClient) -> None:
    first = await client.get("/products/1")
    assert first.status_code == 200
    body = first.json()
    assert body["source"] == "Database"
    assert body["product"] == seeded(1)
    assert body["response_time"].endswith(" seconds")

    second = (await client.get("/products/1")).json()
    assert second["source"] == "Redis Cache"
    assert second["product"] == body["product"]


async def test_concurrent_first_reads_wait_for_one_query(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(*(client.get("/products/2") for _ in range(20)))
    bodies = [r.json() for r in responses]
    assert all(b["product"] == seeded(2) for b in bodies)
    assert {b["source"] for b in bodies} == {"Database"}  # all twenty waited for the one query
    assert (await client.get("/products/2")).json()["source"] == "Redis Cache"


async def test_unknown_product_is_404_and_remembered(client: httpx.AsyncClient) -> None:
    assert (await client.get("/products/999")).status_code == 404
    assert (await client.get("/products/999")).status_code == 404
    assert (await client.get("/products/abc")).status_code == 422
    assert (await client.put("/products/999", json={"price": 1})).status_code == 404
    assert (await client.put("/products/1", json={"price": -1})).status_code == 422


async def test_invalidate_sends_the_next_read_to_the_database(client: httpx.AsyncClient) -> None:
    await client.get("/products/3")
    assert (await client.get("/products/3")).json()["source"] == "Redis Cache"
    assert (await client.post("/products/3/invalidate")).json() == {"deleted": True}
    assert (await client.get("/products/3")).json()["source"] == "Database"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_put_invalidates_through_the_outbox(client: httpx.AsyncClient) -> None:
    await client.get("/products/1")
    assert (await client.get("/products/1")).json()["source"] == "Redis Cache"
    updated = await client.put("/products/1", json={"price": 899.0, "stock": 11})
    assert updated.status_code == 200
    assert updated.json()["product"] == {**seeded(1), "price": 899.0, "stock": 11, "version": 2}

    seen: list[str] = []

    async def read_until_cached_again() -> None:
        # The relay and the consumer run in the app: the old copy goes within milliseconds. (The tag event that
        # follows the key's may drop the first new copy again: read until the new product is a hit.)
        while True:
            body = (await client.get("/products/1")).json()
            if body["product"] == updated.json()["product"]:
                seen.append(body["source"])
                if body["source"] == "Redis Cache":
                    return
            else:
                assert body["product"] == seeded(1) and body["source"] == "Redis Cache"
            await asyncio.sleep(0.02)

    await asyncio.wait_for(read_until_cached_again(), 10)
    assert seen[0] == "Database"  # the first read of the new row came from the database


async def test_the_tours_keys_on_the_same_redis_never_reach_the_example(redis_url: str, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's tour (keyspace product:{id}, default prefix) and this example run side by side on one Redis:
    the tour's workers writing product:1 must not replace the example's product 1 (they did, sharing the key)."""
    monkeypatch.setenv("EXAMPLE_DB_LATENCY", "0")
    monkeypatch.setenv("CACHEWARM_REDIS_URL", redis_url)
    monkeypatch.delenv("CACHEWARM_KEY_PREFIX", raising=False)
    app: FastAPI = fastapi_products.create_app(database_url=f"sqlite:///{tmp_path / 'products.db'}", run_relay=False)
    tour = Settings.load(redis_url=redis_url, config=tmp_path / "none.toml")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://example") as http:
            await http.get("/products/1")
            with Cache(settings=tour, keyspaces=fastapi_products.KeyspaceRegistry.from_mapping(
                    fastapi_products.KEYSPACES)) as tour_cache:
                tour_cache.set("product:1", {"id": 1, "name": "the tour's product 1", "version": 99})
            body = (await http.get("/products/1")).json()
    assert body["source"] == "Redis Cache"
    assert body["product"] == seeded(1)
