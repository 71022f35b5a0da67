"""The workers' HTTP client (sources.HttpPool, aiohttp called directly) answers as the read path's httpx client:
the same request target and Host for every key, the same outcomes (value, 404, 5xx, other status, not JSON,
timeout, connection refused), no redirect followed."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import httpx
import pytest

from cachewarm.config.sources import Fetched, HttpPool, HttpSource, SourceClient
from cachewarm.demo.redis_server import free_port
from cachewarm.errors import BadSourceResponse, SourceError


class Scripted:
    """An HTTP server answering every GET with `status` and `body` (after `delay` s), recording target and Host."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.status, self.body, self.delay = 200, b'{"ok": true, "v": 3}', 0.0
        self.headers: dict[str, str] = {"Content-Type": "application/json"}
        scripted = self
        stop = self.stop = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                scripted.requests.append((self.path, self.headers.get("Host", "")))
                if scripted.delay:
                    stop.wait(scripted.delay)
                self.send_response(scripted.status)
                for name, value in scripted.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(scripted.body)))
                self.end_headers()
                self.wfile.write(scripted.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted()
    yield server
    server.close()


@pytest.fixture(params=["pool", "httpx"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[SourceClient]:
    made: SourceClient = HttpPool(max_connections=10) if request.param == "pool" else httpx.AsyncClient()
    yield made
    await made.aclose()


def source_at(port: int, *, timeout: float = 2.0, version_field: str | None = None) -> HttpSource:
    return HttpSource("product", f"http://127.0.0.1:{port}/products/{{id}}", timeout=timeout,
                      version_field=version_field)


@pytest.mark.parametrize("param", ["7", "../../admin", "%2e%2e", "a/b", "..%2F..%2Fadmin", "@evil.com", "x?y=1#z",
                                   "\\..\\admin", "./admin", " ", "é/ü", "a..b"])
async def test_one_segment_on_the_same_host(scripted: Scripted, client: SourceClient, param: str) -> None:
    fetched = await source_at(scripted.port, version_field="v").fetch({"id": param}, client)
    assert fetched == Fetched({"ok": True, "v": 3}, 3)
    [(target, host)] = scripted.requests
    assert host == f"127.0.0.1:{scripted.port}"
    segment = target.removeprefix("/products/")
    assert target.startswith("/products/") and "/" not in segment and "?" not in segment and "#" not in segment
    assert unquote(segment) == param


async def test_the_pool_sends_what_httpx_sends(scripted: Scripted) -> None:
    """Byte for byte the same request targets, for keys that need quoting and for a template that does too."""
    params = ["7", "é/ü", "a b", "%41", "~x-y_z.1"]
    pool, plain = HttpPool(max_connections=4), httpx.AsyncClient()
    try:
        for template in (f"http://127.0.0.1:{scripted.port}/products/{{id}}",
                         f"http://127.0.0.1:{scripted.port}/pro ducts/é/{{id}}?x=1"):
            src = HttpSource("product", template, timeout=2.0, version_field=None)
            for param in params:
                await src.fetch({"id": param}, plain)
                await src.fetch({"id": param}, pool)
    finally:
        await pool.aclose()
        await plain.aclose()
    targets = [target for target, _ in scripted.requests]
    assert targets[0::2] == targets[1::2]


async def test_404_is_no_such_item(scripted: Scripted, client: SourceClient) -> None:
    scripted.status = 404
    assert not (await source_at(scripted.port).fetch({"id": "1"}, client)).found


@pytest.mark.parametrize(("status", "kind"), [(500, "http_5xx"), (503, "http_5xx"), (403, "http_status"),
                                              (302, "http_status"), (201, "http_status")])
async def test_other_statuses_are_source_errors(scripted: Scripted, client: SourceClient, status: int,
                                                kind: str) -> None:
    scripted.status = status
    scripted.headers["Location"] = f"http://127.0.0.1:{scripted.port}/elsewhere"
    with pytest.raises(SourceError) as info:
        await source_at(scripted.port).fetch({"id": "1"}, client)
    assert info.value.kind == kind
    assert [target for target, _ in scripted.requests] == ["/products/1"]  # a redirect is not followed


async def test_a_body_that_is_not_json(scripted: Scripted, client: SourceClient) -> None:
    scripted.body = b"<html>"
    with pytest.raises(BadSourceResponse):
        await source_at(scripted.port).fetch({"id": "1"}, client)


async def test_timeout(scripted: Scripted, client: SourceClient) -> None:
    scripted.delay = 1.0
    with pytest.raises(SourceError) as info:
        await source_at(scripted.port, timeout=0.1).fetch({"id": "1"}, client)
    assert info.value.kind == "timeout" and not isinstance(info.value, BadSourceResponse)


async def test_connection_refused(client: SourceClient) -> None:
    with pytest.raises(SourceError) as info:
        await source_at(free_port()).fetch({"id": "1"}, client)
    assert info.value.kind == "connect"


async def test_the_pool_is_opened_on_use_and_opened_again_after_close(scripted: Scripted) -> None:
    pool = HttpPool(max_connections=2)
    await pool.aclose()  # never used: nothing to close
    assert (await source_at(scripted.port).fetch({"id": "1"}, pool)).found
    await pool.aclose()
    assert (await source_at(scripted.port).fetch({"id": "2"}, pool)).found
    await pool.aclose()
    assert len(scripted.requests) == 2
