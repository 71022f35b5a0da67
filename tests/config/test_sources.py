"""Sources: HTTP over a real socket (SourceServer or a recording server) and Python callables, sync and async."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from cachewarm import AsyncCache, BadSourceResponse, Cache, InvalidKey, Settings, SourceError, ValueNotSerializable
from cachewarm.config.keyspaces import load_keyspaces
from cachewarm.config.sources import HttpSource
from cachewarm.demo.redis_server import free_port
from cachewarm.demo.source import SourceServer
from tests.support import sources_fixture
from tests.support.waiting import wait_until

pytestmark = pytest.mark.source(latency=0.0, items=1000)

PYTHON_KEYSPACES = """
[keyspaces.price]
pattern = "price:{region}:{id}"
source = "python:tests.support.sources_fixture:price"
ttl = 60

[keyspaces.aprice]
pattern = "aprice:{id}"
source = "python:tests.support.sources_fixture:aprice"
ttl = 60

[keyspaces.broken]
pattern = "broken:{id}"
source = "python:tests.support.sources_fixture:broken"
ttl = 60

[keyspaces.notjson]
pattern = "notjson:{id}"
source = "python:tests.support.sources_fixture:not_json"
ttl = 60
"""


def http_keyspace(base: str, **extra: object) -> str:
    lines = "".join(f"{k} = {v}\n" for k, v in extra.items())
    return f"""
[keyspaces.product]
pattern = "product:{{id}}"
source = "{base}/products/{{id}}"
ttl = 60
{lines}"""



class Recorder:
    """An HTTP server that records the raw request target and Host header of every request; answers JSON."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.requests.append((self.path, self.headers.get("Host", "")))
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder() as rec:
        yield rec


def test_http_json(make_cache: Callable[..., Cache], write_config: Callable[[str], Path],
                   source: SourceServer) -> None:
    cache = make_cache(write_config(http_keyspace(source.url)))
    product = cache.get("product:7")
    assert product["id"] == "7" and product["name"] == "Product 7"
    assert cache.get("product:7") == product
    assert source.stats()["by_path"] == {"/products/7": 1}


def test_404_is_none_and_remembered_briefly(make_cache: Callable[..., Cache], write_config: Callable[[str], Path],
                                            source: SourceServer) -> None:
    cache = make_cache(write_config(http_keyspace(source.url, negative_ttl=30)))
    assert cache.get("product:99999") is None
    second = cache.lookup("product:99999")
    assert second.value is None and second.hit
    assert source.stats()["by_path"] == {"/products/99999": 1}
    assert cache.redis.pttl(cache.layout.value("product:99999")) <= 30_000


def test_negative_entry_expires(make_cache: Callable[..., Cache], write_config: Callable[[str], Path],
                                source: SourceServer) -> None:
    cache = make_cache(write_config(http_keyspace(source.url, negative_ttl=0.05)))
    assert cache.get("product:5000") is None
    source.set_item(5000, {"name": "new"})
    # the remembered 404 (50 ms) expires by itself
    wait_until(lambda: cache.get("product:5000") is not None, 1.0, "the remembered 404 to expire", interval=0.005)
    assert cache.get("product:5000")["name"] == "new"


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_source_error(make_cache: Callable[..., Cache], write_config: Callable[[str], Path],
                             source: SourceServer, status: int) -> None:
    cache = make_cache(write_config(http_keyspace(source.url)))
    source.configure(status_override=status)
    with pytest.raises(SourceError) as info:
        cache.get("product:1")
    assert info.value.kind == "http_5xx"
    assert not cache.exists("product:1")
    source.configure(status_override=None)
    assert cache.get("product:1")["id"] == "1"


def test_timeout_is_source_error(make_cache: Callable[..., Cache], write_config: Callable[[str], Path],
                                 source: SourceServer) -> None:
    cache = make_cache(write_config(http_keyspace(source.url, timeout=0.2)))
    source.configure(latency=0.6)
    with pytest.raises(SourceError) as info:
        cache.get("product:1")
    assert info.value.kind == "timeout"
    assert not isinstance(info.value, BadSourceResponse)


def test_connection_refused_is_source_error(make_cache: Callable[..., Cache],
                                            write_config: Callable[[str], Path]) -> None:
    cache = make_cache(write_config(http_keyspace(f"http://127.0.0.1:{free_port()}")))
    with pytest.raises(SourceError) as info:
        cache.get("product:1")
    assert info.value.kind == "connect"


def test_garbage_is_bad_source_response(make_cache: Callable[..., Cache], write_config: Callable[[str], Path],
                                        source: SourceServer) -> None:
    cache = make_cache(write_config(http_keyspace(source.url)))
    source.configure(garbage_rate=1.0)
    with pytest.raises(BadSourceResponse):
        cache.get("product:1")
    assert not cache.exists("product:1")


@pytest.mark.parametrize("param", ["../../admin", "%2e%2e", "a/b", "..%2F..%2Fadmin", "@evil.com", "x?y=1#z",
                                   "\\..\\admin", "./admin", " ", "é/ü"])
def test_a_key_cannot_climb_the_path_or_change_the_host(make_cache: Callable[..., Cache],
                                                       write_config: Callable[[str], Path],
                                                       recorder: Recorder, param: str) -> None:
    cache = make_cache(write_config(http_keyspace(f"http://127.0.0.1:{recorder.port}")))
    assert cache.get(f"product:{param}") == {"ok": True}
    assert len(recorder.requests) == 1
    target, host = recorder.requests[0]
    assert host == f"127.0.0.1:{recorder.port}"
    assert target.startswith("/products/")
    segment = target.removeprefix("/products/")
    assert "/" not in segment and "?" not in segment and "#" not in segment
    assert unquote(segment) == param  # exactly one encoded segment: the parameter itself


@pytest.mark.parametrize("param", ["..", ".", "..."])
def test_dot_segments_never_reach_the_source(make_cache: Callable[..., Cache], write_config: Callable[[str], Path],
                                             recorder: Recorder, param: str) -> None:
    cache = make_cache(write_config(http_keyspace(f"http://127.0.0.1:{recorder.port}")))
    with pytest.raises(InvalidKey):
        cache.get(f"product:{param}")
    assert recorder.requests == []


def test_traversal_against_the_demo_source(make_cache: Callable[..., Cache], write_config: Callable[[str], Path],
                                           source: SourceServer) -> None:
    cache = make_cache(write_config(http_keyspace(source.url)))
    for param in ["../../_stats", "../_control", "%2e%2e"]:
        assert cache.get(f"product:{param}") is None  # a 404 for an odd product id, never /_stats
    paths = source.stats()["by_path"]
    assert set(paths) == {"/products/../../_stats", "/products/../_control", "/products/%2e%2e"}
    assert source.stats()["requests"] == 3  # all three were product reads (decoded by aiohttp for display)


def test_url_for_encodes_each_parameter_as_one_segment() -> None:
    src = HttpSource("p", "https://api.example.com/v1/{shop}/items/{id}", timeout=1, version_field=None)
    assert src.url_for({"shop": "a/b", "id": "../x"}) == "https://api.example.com/v1/a%2Fb/items/..%2Fx"
    with pytest.raises(InvalidKey):
        src.url_for({"shop": "..", "id": "1"})


def test_python_sources_sync(make_cache: Callable[..., Cache], write_config: Callable[[str], Path]) -> None:
    cache = make_cache(write_config(PYTHON_KEYSPACES))
    sources_fixture.calls.clear()
    assert cache.get("price:eu:1") == {"region": "eu", "id": "1", "price": 10}
    assert cache.get("price:eu:1") == {"region": "eu", "id": "1", "price": 10}
    assert cache.get("price:eu:missing") is None
    assert cache.get("price:eu:missing") is None
    assert sources_fixture.calls == [("price", "eu:1"), ("price", "eu:missing")]
    assert cache.get("aprice:3") == {"id": "3", "async": True}  # an async function from a sync Cache
    with pytest.raises(SourceError, match="database down"):
        cache.get("broken:1")
    with pytest.raises(ValueNotSerializable):
        cache.get("notjson:1")
    assert not cache.exists("notjson:1")
    with pytest.raises(ValueNotSerializable):
        cache.set("price:eu:2", {"s": {1, 2}})
    with pytest.raises(ValueNotSerializable):
        cache.set("price:eu:2", {"nan": float("nan")})


async def test_python_sources_async(make_settings: Callable[..., Settings],
                                    write_config: Callable[[str], Path]) -> None:
    async with AsyncCache(settings=make_settings(write_config(PYTHON_KEYSPACES))) as cache:
        sources_fixture.calls.clear()
        assert await cache.get("aprice:1") == {"id": "1", "async": True}
        assert (await cache.lookup("aprice:1")).hit
        assert await cache.get("aprice:missing") is None
        assert (await cache.lookup("aprice:missing")).hit
        assert await cache.get("price:us:1") == {"region": "us", "id": "1", "price": 10}  # sync fn, async cache
        assert sources_fixture.calls == [("aprice", "1"), ("aprice", "missing"), ("price", "us:1")]
        with pytest.raises(SourceError):
            await cache.get("broken:1")
        with pytest.raises(ValueNotSerializable):
            await cache.get("notjson:1")
        with pytest.raises(ValueNotSerializable):
            await cache.set("price:eu:2", object())


async def test_async_http(make_settings: Callable[..., Settings], write_config: Callable[[str], Path],
                          source: SourceServer) -> None:
    async with AsyncCache(settings=make_settings(write_config(http_keyspace(source.url)))) as cache:
        assert (await cache.get("product:3"))["id"] == "3"
        assert await cache.get("product:99999") is None
        assert (await cache.lookup("product:99999")).hit
        source.configure(status_override=500)
        with pytest.raises(SourceError):
            await cache.get("product:4")
        source.configure(status_override=None, garbage_rate=1.0)
        with pytest.raises(BadSourceResponse):
            await cache.get("product:5")
    assert source.stats()["by_path"]["/products/99999"] == 1


def test_keyspace_file_with_python_source_loads(write_config: Callable[[str], Path]) -> None:
    assert load_keyspaces(write_config(PYTHON_KEYSPACES)).names() == ["price", "aprice", "broken", "notjson"]


def test_source_timeout_setting_applies_when_the_keyspace_sets_none(make_cache: Callable[..., Cache],
                                                                    write_config: Callable[[str], Path],
                                                                    source: SourceServer) -> None:
    cache = make_cache(write_config(http_keyspace(source.url)), source_timeout=0.2)
    source.configure(latency=0.6)
    with pytest.raises(SourceError) as info:
        cache.get("product:1")
    assert info.value.kind == "timeout"
