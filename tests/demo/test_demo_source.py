"""The demo's slow product API: reads, writes through the control endpoints, faults and statistics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from cachewarm.demo.source import SourceServer, SourceState
from cachewarm.demo.source_process import SourceProcess

pytestmark = pytest.mark.source(latency=0.0, items=1000)


@pytest.fixture
def http(source: SourceServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=source.url, timeout=10.0) as client:
        yield client


def test_serves_products_as_json(http: httpx.Client) -> None:
    before = time.time()
    response = http.get("/products/7")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["id"] == "7"
    assert body["name"] == "Product 7"
    assert isinstance(body["price"], float)
    assert body["version"] == 1
    assert before <= body["fetched_at"] <= time.time()
    alias = http.get("/items/7").json()
    assert {k: v for k, v in alias.items() if k != "fetched_at"} == {
        k: v for k, v in body.items() if k != "fetched_at"}


@pytest.mark.parametrize("item_id", ["1000", "abc", "-1", "1.5", "٣"])
def test_unknown_ids_are_404(http: httpx.Client, item_id: str) -> None:
    response = http.get(f"/products/{item_id}")
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}


def test_reads_wait_for_the_latency(source: SourceServer, http: httpx.Client) -> None:
    source.configure(latency=0.3)
    started = time.monotonic()
    assert http.get("/products/1").status_code == 200
    assert time.monotonic() - started >= 0.25


def test_bump_increments_version_and_changes_price(source: SourceServer, http: httpx.Client) -> None:
    before = http.get("/products/3").json()
    bumped = http.post("/_control/bump/3").json()
    assert bumped["version"] == 2
    assert bumped["price"] != before["price"]
    again = source.bump(3)
    after = http.get("/products/3").json()
    assert again["version"] == 3
    assert (after["version"], after["price"]) == (3, again["price"])
    assert http.post("/_control/bump/5000").status_code == 404
    with pytest.raises(KeyError):
        source.bump("nope")


def test_put_sets_an_item_body(source: SourceServer, http: httpx.Client) -> None:
    created = http.put("/_control/item/widget", json={"name": "Widget", "price": 2.5, "version": 7})
    assert created.status_code == 200
    body = http.get("/products/widget").json()
    assert (body["id"], body["name"], body["price"], body["version"]) == ("widget", "Widget", 2.5, 7)
    assert http.put("/_control/item/widget", json={"name": "Widget v2"}).json()["version"] == 8
    assert source.set_item(1, {"name": "Renamed"})["version"] == 2
    assert http.get("/products/1").json()["name"] == "Renamed"
    assert http.put("/_control/item/x", json={"version": "high"}).status_code == 400
    assert http.put("/_control/item/x", content=b"not json").status_code == 400


def test_deleted_items_are_404(source: SourceServer, http: httpx.Client) -> None:
    assert source.delete_item(4) is True
    assert http.get("/products/4").status_code == 404
    assert http.delete("/_control/item/4").json() == {"deleted": False}


def test_error_rate_one_answers_500(source: SourceServer, http: httpx.Client) -> None:
    source.configure(error_rate=1)
    assert http.get("/products/1").status_code == 500
    source.configure(error_rate=0)
    assert http.get("/products/1").status_code == 200


def test_garbage_rate_answers_200_with_a_body_that_is_not_json(source: SourceServer,
                                                                http: httpx.Client) -> None:
    source.configure(garbage_rate=1.0)
    response = http.get("/products/1")
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def test_status_override_answers_every_read_until_cleared(http: httpx.Client) -> None:
    assert http.post("/_control", json={"status_override": 503}).status_code == 200
    assert http.get("/products/1").status_code == 503
    assert http.get("/products/99999").status_code == 503
    assert http.get("/_control").json()["status_override"] == 503
    http.post("/_control", json={"status_override": None})
    assert http.get("/products/1").status_code == 200


def test_slow_rate_uses_the_slow_latency(source: SourceServer, http: httpx.Client) -> None:
    source.configure(slow_rate=1, slow_latency=0.3)
    started = time.monotonic()
    assert http.get("/products/1").status_code == 200
    assert time.monotonic() - started >= 0.25


def test_seeded_faults_repeat(source: SourceServer, http: httpx.Client) -> None:
    def statuses() -> list[int]:
        source.configure(error_rate=0.5, seed=42)
        return [http.get("/products/1").status_code for _ in range(30)]

    first = statuses()
    assert set(first) == {200, 500}
    assert statuses() == first


def test_control_reports_and_validates_settings(source: SourceServer, http: httpx.Client) -> None:
    settings = http.get("/_control").json()
    assert settings["latency"] == 0.0
    assert settings["error_rate"] == 0.0
    assert settings["items"] == 1000
    assert http.post("/_control", json={"error_rate": 2}).status_code == 400
    assert http.post("/_control", json={"latency": 0.01, "colour": "red"}).status_code == 400
    assert http.get("/_control").json()["latency"] == 0.0  # a rejected change applies nothing
    with pytest.raises(ValueError, match="between 0 and 1"):
        source.configure(garbage_rate=1.5)


def test_stats_count_reads_by_path_and_status(source: SourceServer, http: httpx.Client) -> None:
    for _ in range(3):
        http.get("/products/1")
    http.get("/items/2")
    http.get("/products/nope")
    http.get("/_control")  # control and stats requests are not reads
    stats = source.stats()
    assert stats["requests"] == 5
    assert stats["by_path"] == {"/products/1": 3, "/items/2": 1, "/products/nope": 1}
    assert stats["by_status"] == {"200": 4, "404": 1}
    assert stats["by_agent"] == {"python-httpx": 5}  # the client's product name (the auditor's: cachewarm-audit)
    assert stats["in_flight"] == 0
    assert stats["max_in_flight"] == 1
    assert http.get("/_stats").json() == stats
    assert http.post("/_stats/reset").json()["requests"] == 0
    http.get("/products/1")
    source.reset_stats()
    assert source.stats() == {"requests": 0, "by_path": {}, "by_status": {}, "by_agent": {}, "in_flight": 0,
                              "max_in_flight": 0}


async def test_stats_track_concurrent_reads(source: SourceServer) -> None:
    source.configure(latency=2.0)  # long enough for all 20 to be sent before the first answer (0.2 s: 16 in CI)
    async with httpx.AsyncClient(base_url=source.url, timeout=10.0) as client:
        responses = await asyncio.gather(*(client.get(f"/products/{i}") for i in range(20)))
    assert {r.status_code for r in responses} == {200}
    stats = source.stats()
    assert stats["max_in_flight"] == 20
    assert stats["in_flight"] == 0


def test_by_path_keeps_only_the_top_1000() -> None:
    state = SourceState(items=10)
    state.by_path.update({f"/products/{i}": i + 1 for i in range(1500)})
    top = state.stats()["by_path"]
    assert len(top) == 1000
    assert min(top.values()) == 501


def test_source_process_runs_the_same_api_in_a_child_process() -> None:
    with SourceProcess(latency=0.0, items=50) as source:
        assert source.url.startswith("http://127.0.0.1:")
        assert source.process is not None
        process = source.process
        with httpx.Client(base_url=source.url, timeout=10.0) as http:
            assert http.get("/products/49").json()["version"] == 1
            assert http.get("/products/50").status_code == 404
            assert source.bump(49)["version"] == 2
            assert http.get("/products/49").json()["version"] == 2
            assert source.set_item("gadget", {"name": "Gadget"})["version"] == 1
            assert source.configure(error_rate=1)["error_rate"] == 1
            assert http.get("/products/1").status_code == 500
            with pytest.raises(ValueError, match="unknown setting"):
                source.configure(bogus=1)
            stats = source.stats()
            assert stats["requests"] == 4
            assert stats["by_status"] == {"200": 2, "404": 1, "500": 1}
            source.reset_stats()
            assert source.stats()["requests"] == 0
            with pytest.raises(KeyError):
                source.bump("missing")
    assert process.returncode is not None
    assert source.process is None
