"""A refresh stores a source's JSON body as it came (one parse, no encoding again: issue 29) when it is UTF-8 on
one line, and encodes the parsed value when it is not (UTF-16, a byte order mark, indented over lines); readers get
the same value either way.
Real redis-server, an HTTP source on a socket answering fixed bodies."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from cachewarm import Settings
from cachewarm.redis_layer import envelope
from cachewarm.redis_layer.keys import KeyLayout
from cachewarm.warming.context import RefreshContext
from cachewarm.warming.refresh import refresh_batch
from tests.support.refresh_context import refresh_context

L = KeyLayout()
VALUE = {"name": "caf\u00e9 \u2615", "price": 12.5, "tags": ["a", "b"], "version": 7}
BODIES = {
    "/items/spaced": b'{ "name": "caf\xc3\xa9 \xe2\x98\x95",  "price": 12.5, "tags": ["a", "b"], "version": 7 }',
    "/items/pretty": (b'{\n  "name": "caf\xc3\xa9 \xe2\x98\x95",\n  "price": 12.5,\n  "tags": ["a", "b"],\n'
                      b'  "version": 7\n}'),
    "/items/utf16": '{"name": "caf\u00e9 \u2615", "price": 12.5, "tags": ["a", "b"], "version": 7}'.encode("utf-16"),
    "/items/bom": b'\xef\xbb\xbf{"name": "caf\xc3\xa9 \xe2\x98\x95", "price": 12.5, "tags": ["a", "b"], "version": 7}',
}


class Bodies:
    """An HTTP server answering BODIES by path (404 otherwise)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = BODIES.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)


@pytest.fixture
def bodies() -> Iterator[Bodies]:
    server = Bodies()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


@pytest.fixture
async def ctx(bodies: Bodies, write_config: Callable[[str], Path],
              make_settings: Callable[..., Settings]) -> AsyncIterator[RefreshContext]:
    config = write_config(f"""
        [keyspaces.item]
        pattern = "item:{{id}}"
        source = "{bodies.url}/items/{{id}}"
        ttl = 30
        version_field = "version"
    """)
    async with refresh_context(make_settings(config, refresh_retries=0)) as context:
        yield context


async def test_a_utf8_body_is_stored_as_it_came(ctx: RefreshContext, redis_client: redis.Redis) -> None:
    assert await refresh_batch(ctx, ["item:spaced"], force=True) == {"ok": 1}
    raw = redis_client.get(L.value("item:spaced")) or b""
    assert raw.endswith(BODIES["/items/spaced"])  # its spaces and all: not encoded again
    entry = envelope.decode(raw)
    assert (entry.value, entry.version) == (VALUE, 7)


@pytest.mark.parametrize("name", ["utf16", "bom", "pretty"])
async def test_a_body_in_another_encoding_or_indented_is_stored_as_compact_utf8_json(name: str, ctx: RefreshContext,
                                                                  redis_client: redis.Redis) -> None:
    assert await refresh_batch(ctx, [f"item:{name}"], force=True) == {"ok": 1}
    raw = redis_client.get(L.value(f"item:{name}")) or b""
    assert raw.endswith(envelope.dumps(VALUE).encode())
    entry = envelope.decode(raw)
    assert (entry.value, entry.version) == (VALUE, 7)
