"""The FastAPI example through an ASGI client against a real redis-server: first Database, then Redis Cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from cachewarm import Settings
from examples import fastapi_products


@pytest.fixture
async def client(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("EXAMPLE_DB_LATENCY", "0.2")
    app: FastAPI = fastapi_products.create_app(Settings.load(redis_url=redis_url, config=tmp_path / "none.toml"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://example") as http:
            yield http


async def test_first_read_from_the_database_then_from_redis(client: httpx.AsyncClient) -> None:
    first = await client.get("/products/1")
    assert first.status_code == 200
    body = first.json()
    assert body["source"] == "Database"
    assert body["product"] == fastapi_products.PRODUCTS[1]
    assert body["response_time"].endswith(" seconds")

    second = (await client.get("/products/1")).json()
    assert second["source"] == "Redis Cache"
    assert second["product"] == body["product"]


async def test_concurrent_first_reads_wait_for_one_query(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(*(client.get("/products/2") for _ in range(20)))
    bodies = [r.json() for r in responses]
    assert all(b["product"] == fastapi_products.PRODUCTS[2] for b in bodies)
    assert {b["source"] for b in bodies} == {"Database"}  # all twenty waited for the one query
    assert (await client.get("/products/2")).json()["source"] == "Redis Cache"


async def test_unknown_product_is_404_and_remembered(client: httpx.AsyncClient) -> None:
    assert (await client.get("/products/999")).status_code == 404
    assert (await client.get("/products/999")).status_code == 404
    assert (await client.get("/products/abc")).status_code == 422


async def test_invalidate_sends_the_next_read_to_the_database(client: httpx.AsyncClient) -> None:
    await client.get("/products/3")
    assert (await client.get("/products/3")).json()["source"] == "Redis Cache"
    assert (await client.post("/products/3/invalidate")).json() == {"deleted": True}
    assert (await client.get("/products/3")).json()["source"] == "Database"
