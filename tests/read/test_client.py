"""Both clients against a real redis-server through the blocking interface: reads, writes, tags, clear, the decorator.

Each test runs for Cache and for AsyncCache (behind Cache's interface, tests/support/clients.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cachewarm import Cache, CacheUnavailable, Lookup, Settings, UnknownKeyspace
from cachewarm.demo.redis_server import free_port
from tests.support import sources_fixture
from tests.support.clients import FLAVOURS, blocking_client
from tests.support.redis_cluster import topologies

KEYSPACES = """
[keyspaces.item]
pattern = "item:{id}"
source = "python:tests.support.sources_fixture:counted"
ttl = 60
tags = ["items", "item-{id}"]

[keyspaces.gated]
pattern = "gated:{id}"
source = "python:tests.support.sources_fixture:gated"
ttl = 60
"""


@pytest.fixture(params=FLAVOURS)
def client_class(request: pytest.FixtureRequest) -> Any:
    return blocking_client(request.param)


@pytest.fixture
def cache(client_class: Any, make_settings: Callable[..., Settings],
          write_config: Callable[[str], Path]) -> Iterator[Cache]:
    sources_fixture.counter.clear()
    with client_class(settings=make_settings(write_config(KEYSPACES))) as client:
        yield client


def command_calls(client: redis.Redis, name: str) -> int:
    stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


def test_get_reads_through_then_hits(cache: Cache) -> None:
    assert cache.get("item:1") == {"id": "1", "n": 1}
    assert cache.get("item:1") == {"id": "1", "n": 1}
    assert sources_fixture.counter == {"1": 1}


def test_lookup_reports_hit_and_age(cache: Cache) -> None:
    first = cache.lookup("item:2")
    assert isinstance(first, Lookup)
    assert first.value == {"id": "2", "n": 1}
    assert first.hit is False and first.age == 0.0
    time.sleep(0.05)
    second = cache.lookup("item:2")
    assert second.hit is True and second.value == first.value
    assert second.age >= 0.04
    assert cache.lookup("item:2").age >= second.age


def test_value_is_stored_with_the_keyspace_ttl(cache: Cache, redis_client: redis.Redis) -> None:
    cache.get("item:3")
    pttl = redis_client.pttl(cache.layout.value("item:3"))
    assert 55_000 < pttl <= 60_000


def test_unknown_keyspace(cache: Cache) -> None:
    with pytest.raises(UnknownKeyspace):
        cache.get("order:1")
    with pytest.raises(UnknownKeyspace):
        cache.lookup("item:1:2")
    with pytest.raises(UnknownKeyspace):
        cache.set("order:1", {"x": 1})  # no keyspace and no ttl: nothing says how long it lives
    assert cache.set("order:1", {"x": 1}, ttl=5)
    assert cache.exists("order:1")


def test_set_exists_delete(cache: Cache, redis_client: redis.Redis) -> None:
    assert not cache.exists("item:4")
    assert cache.set("item:4", {"written": True}, ttl=30)
    assert cache.exists("item:4")
    found = cache.lookup("item:4")
    assert (found.value, found.hit) == ({"written": True}, True)
    assert 25_000 < redis_client.pttl(cache.layout.value("item:4")) <= 30_000
    assert sources_fixture.counter == {}
    assert cache.delete("item:4") is True
    assert cache.delete("item:4") is False
    assert not cache.exists("item:4")
    assert cache.get("item:4") == {"id": "4", "n": 1}
    with pytest.raises(ValueError):
        cache.set("item:4", None)


def test_clear_by_prefix_uses_scan(cache: Cache, redis_client: redis.Redis) -> None:
    for i in range(30):
        cache.set(f"item:{i}", i)
    cache.set("other:1", 1, ttl=60)
    cache.set("item*x", "star", ttl=60)
    keys_before = command_calls(redis_client, "keys")
    assert cache.clear("item:1") == 11  # item:1 and item:10..19
    assert command_calls(redis_client, "keys") == keys_before
    assert command_calls(redis_client, "scan") > 0
    assert not cache.exists("item:1") and not cache.exists("item:15")
    assert cache.exists("item:2") and cache.exists("item:20")
    assert cache.clear("item*") == 1  # the prefix is literal, not a glob
    assert cache.exists("item:2")
    assert cache.clear("item:") == 19
    assert cache.exists("other:1")
    assert cache.clear() == 1
    assert not cache.exists("other:1")


@topologies
def test_invalidate_tag(cache: Cache) -> None:
    for i in range(5):
        cache.get(f"item:{i}")
    cache.set("free:1", "x", ttl=60, tags=["items"])
    cache.set("free:2", "y", ttl=60)
    assert cache.invalidate_tag("item-3") == 1
    assert not cache.exists("item:3") and cache.exists("item:2")
    assert cache.invalidate_tag("items") >= 5  # counts the tag's members (item:3's was already gone)
    assert not any(cache.exists(f"item:{i}") for i in range(5))
    assert not cache.exists("free:1") and cache.exists("free:2")
    assert cache.invalidate_tag("items") == 0
    assert cache.get("item:1") == {"id": "1", "n": 2}  # reloaded from the source


def test_delete_fences_a_load_in_flight(cache: Cache) -> None:
    """A value loaded before a delete must not be written after it (it may be older than the writer's change)."""
    sources_fixture.entered.clear()
    sources_fixture.gate.clear()
    results: list[object] = []
    reader = threading.Thread(target=lambda: results.append(cache.get("gated:1")))
    reader.start()
    assert sources_fixture.entered.wait(10)
    assert cache.delete("gated:1") is False
    sources_fixture.gate.set()
    reader.join(10)
    assert results == [{"id": "1", "from": "source"}]  # the reader still gets its value...
    assert not cache.exists("gated:1")  # ...but the cache did not keep it


def test_set_wins_over_a_load_in_flight(cache: Cache) -> None:
    sources_fixture.entered.clear()
    sources_fixture.gate.clear()
    reader = threading.Thread(target=cache.get, args=("gated:2",))
    reader.start()
    assert sources_fixture.entered.wait(10)
    cache.set("gated:2", {"id": "2", "from": "writer"})
    sources_fixture.gate.set()
    reader.join(10)
    assert cache.get("gated:2") == {"id": "2", "from": "writer"}


def test_cached_decorator(cache: Cache) -> None:
    calls: list[tuple[int, int]] = []

    @cache.cached(ttl=30)
    def add(a: int, b: int = 1) -> dict[str, int]:
        calls.append((a, b))
        return {"sum": a + b}

    assert add(1, 2) == {"sum": 3}
    assert add(1, b=2) == {"sum": 3}  # same arguments after binding: same key
    assert add(2) == {"sum": 3}
    assert calls == [(1, 2), (2, 1)]
    assert add.__name__ == "add"
    assert add.cache_clear() == 2  # type: ignore[attr-defined]
    assert add(1, 2) == {"sum": 3}
    assert calls == [(1, 2), (2, 1), (1, 2)]


def test_cached_decorator_with_key_template(cache: Cache) -> None:
    calls: list[str] = []

    @cache.cached("user:{user_id}", ttl=30, tags=["users"])
    def user(user_id: str) -> dict[str, str]:
        calls.append(user_id)
        return {"name": f"u{user_id}"}

    assert user("7") == {"name": "u7"} == user("7")
    assert cache.exists("user:7")
    assert cache.invalidate_tag("users") == 1
    assert user("7") == {"name": "u7"}
    assert calls == ["7", "7"]
    cache.set("userx", 1, ttl=10)
    assert user.cache_clear() == 1  # type: ignore[attr-defined]
    assert cache.exists("userx")  # cleared by the template's prefix "user:" only


def test_writes_raise_cache_unavailable_when_redis_is_down(client_class: Any,
                                                          write_config: Callable[[str], Path]) -> None:
    settings = Settings.load(redis_url=f"redis://127.0.0.1:{free_port()}/0", config=write_config(KEYSPACES),
                             redis_timeout=0.2)
    with client_class(settings=settings) as cache:
        for op in (lambda: cache.set("item:1", 1), lambda: cache.delete("item:1"), lambda: cache.exists("item:1"),
                   lambda: cache.clear("item:"), lambda: cache.invalidate_tag("items")):
            with pytest.raises(CacheUnavailable):
                op()


def test_from_url_and_settings(client_class: Any, redis_url: str, write_config: Callable[[str], Path],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEWARM_CONFIG", str(write_config(KEYSPACES)))
    monkeypatch.setenv("CACHEWARM_REDIS_URL", redis_url)
    with client_class.from_settings() as cache:
        assert cache.settings.redis_url == redis_url
        assert cache.get("item:9")["id"] == "9"
    with client_class.from_url(redis_url) as cache:
        assert cache.lookup("item:9").hit
