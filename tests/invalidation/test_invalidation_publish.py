"""Publishing (API and CLI), the bounded stream, tag events, hot-key detection and the worker bootstep."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from cachewarm import Cache, InvalidKey, Settings, publish_invalidation
from cachewarm.cli import cli
from cachewarm.invalidation.apply import Hotness, apply_events, hot_keys
from cachewarm.invalidation.consumer import InvalidationConsumer
from cachewarm.invalidation.events import Event, parse_entry
from cachewarm.redis_layer.keys import INVALIDATION_STREAM
from cachewarm.warming.hot_refresh import HotRefresher


def product(id: str) -> dict[str, str]:
    return {"id": id}


CONFIG = f"""
[keyspaces.product]
pattern = "product:{{id}}"
source = "python:{__name__}:product"
ttl = 60
tags = ["products"]
"""


def test_publish_writes_the_wire_format(redis_client: redis.Redis) -> None:
    before = int(time.time() * 1000)
    entry_id = publish_invalidation("product:42", version=7, redis=redis_client)
    publish_invalidation(tag="products", redis=redis_client)
    (first_id, first), (_, second) = redis_client.xrange(INVALIDATION_STREAM)
    assert first_id.decode() == entry_id
    assert first[b"key"] == b"product:42" and first[b"version"] == b"7" and int(first[b"ts"]) >= before
    assert second[b"tag"] == b"products" and b"key" not in second
    assert parse_entry(first_id, first) == Event(entry_id, "key", "product:42", 7, int(first[b"ts"]))


@pytest.mark.parametrize(("args", "kwargs", "error"), [
    ((), {}, ValueError),
    (("a:1",), {"tag": "t"}, ValueError),
    (("a:1",), {"version": -1}, ValueError),
    (("a:1",), {"version": "3"}, ValueError),
    (("a:1",), {"version": True}, ValueError),
    ((), {"tag": "t", "version": 2}, ValueError),
    (("",), {}, InvalidKey),
    (("a\n1",), {}, InvalidKey),
    (("k" * 5000,), {}, InvalidKey),
])
def test_publish_refuses_bad_input(redis_client: redis.Redis, args: tuple[str, ...], kwargs: dict[str, object],
                                   error: type[Exception]) -> None:
    with pytest.raises(error):
        publish_invalidation(*args, redis=redis_client, **kwargs)  # type: ignore[arg-type]
    assert redis_client.exists(INVALIDATION_STREAM) == 0


def test_stream_is_bounded(redis_url: str, redis_client: redis.Redis) -> None:
    settings = Settings.load(redis_url=redis_url, stream_maxlen=100)
    for i in range(2000):
        publish_invalidation(f"k:{i}", redis=redis_client, settings=settings)
    assert redis_client.xlen(INVALIDATION_STREAM) < 400


def test_cli_publishes_keys_and_tags(redis_url: str, redis_client: redis.Redis,
                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CACHEWARM_REDIS_URL", redis_url)
    monkeypatch.setenv("CACHEWARM_CONFIG", str(tmp_path / "none.toml"))
    result = CliRunner().invoke(cli, ["invalidate", "product:1", "product:2", "--tag", "products"])
    assert result.exit_code == 0, result.output
    fields = [f for _, f in redis_client.xrange(INVALIDATION_STREAM)]
    assert [f.get(b"key", f.get(b"tag")) for f in fields] == [b"product:1", b"product:2", b"products"]
    result = CliRunner().invoke(cli, ["invalidate", "product:1", "--version", "9"])
    assert result.exit_code == 0 and redis_client.xrevrange(INVALIDATION_STREAM, count=1)[0][1][b"version"] == b"9"


@pytest.mark.parametrize("argv", [[], ["a:1", "b:2", "--version", "3"], ["a:1", "--version", "-2"], ["a\x01"]])
def test_cli_usage_errors_exit_2(argv: list[str], redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEWARM_REDIS_URL", redis_url)
    assert CliRunner().invoke(cli, ["invalidate", *argv]).exit_code == 2


def test_cli_configuration_error_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEWARM_REDIS_URL", "http://nope")
    result = CliRunner().invoke(cli, ["invalidate", "a:1"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "CACHEWARM_REDIS_URL" in result.output


def test_tag_event_invalidates_members_and_reports_them(
        write_config: Callable[[str], Path], make_cache: Callable[..., Cache], redis_client: redis.Redis) -> None:
    cache = make_cache(write_config(CONFIG))
    for i in range(3):
        cache.get(f"product:{i}")
    redis_client.sadd(cache.layout.pinned("product"), "product:1")
    applied = apply_events(redis_client, [Event("1-1", "tag", "products")], layout=cache.layout,
                           fence_ttl=cache.settings.fence_ttl, hotness=Hotness(cache.keyspaces, 60, 1000))
    assert applied.outcomes == {"1-1": "applied"}
    assert sorted(applied.keys) == ["product:0", "product:1", "product:2"]
    assert applied.hot == ["product:1"]
    assert not any(cache.exists(f"product:{i}") for i in range(3))
    assert redis_client.zcard(cache.layout.tag("products")) == 3  # members stay (a load may be in flight)


def test_burst_names_each_hot_key_once(
        redis_url: str, write_config: Callable[[str], Path], make_cache: Callable[..., Cache],
        redis_client: redis.Redis) -> None:
    config = write_config(CONFIG)
    cache = make_cache(config)
    for _ in range(20):
        cache.get("product:1")  # hot: many recent reads
    cache.get("product:2")      # one read: below hot_threshold... after it decays
    cache.get("product:3")
    redis_client.sadd(cache.layout.pinned("product"), "product:3")  # pinned: always hot
    cache.flush_stats()
    settings = Settings.load(redis_url=redis_url, config=config, hot_threshold=2)
    assert sorted(hot_keys(redis_client, ["product:1", "product:2", "product:3", "other:1"],
                           keyspaces=settings.keyspaces, layout=cache.layout, half_life=60,
                           threshold=2)) == ["product:1", "product:3"]

    calls: list[list[str]] = []
    consumer = InvalidationConsumer(settings, name="c1", block_ms=50, on_hot_keys=calls.append)
    try:
        for _ in range(30):
            for key in ("product:1", "product:2", "product:3"):
                publish_invalidation(key, redis=redis_client)
        while consumer.poll(block_ms=50):
            pass
    finally:
        consumer.close()
    assert calls == [["product:1", "product:3"]]


def test_hot_refresher_coalesces_repeats() -> None:
    from concurrent.futures import Future

    started: list[tuple[list[str], Future[None]]] = []

    def start(keys: list[str], watch: object) -> Future[None]:
        future: Future[None] = Future()
        started.append((keys, future))
        return future

    refresher = HotRefresher(start)
    refresher(["a", "b"])
    for _ in range(10):
        refresher(["a"])
    assert [k for k, _ in started] == [["a", "b"]]
    started[0][1].set_result(None)      # the first batch ends: one more refresh of a for the ten requests
    assert [k for k, _ in started] == [["a", "b"], ["a"]]
    started[1][1].set_exception(RuntimeError("source down"))
    refresher(["a", "c"])
    assert [k for k, _ in started] == [["a", "b"], ["a"], ["a", "c"]]
    assert refresher.failed == 1


def test_hot_refresher_starts_a_keys_next_refresh_when_its_own_ends() -> None:
    from concurrent.futures import Future

    started: list[tuple[list[str], Future[None]]] = []

    def start(keys: list[str], watch: HotRefresher) -> Future[None]:
        future: Future[None] = Future()
        started.append((keys, future))
        return future

    refresher = HotRefresher(start)
    refresher(["a", "b"])
    refresher.fetching("a")
    refresher.fetching("b")
    refresher(["a", "b"])                 # both wanted again, after their source requests went
    refresher.done("a", True)             # a's refresh ended, b's still runs: a starts again now
    assert [k for k, _ in started] == [["a", "b"], ["a"]]
    refresher.done("c", True)             # not running: nothing
    started[0][1].set_result(None)        # the batch ends: b (never told) ends with it, and starts again
    assert [k for k, _ in started] == [["a", "b"], ["a"], ["b"]]
    refresher(["a"])                      # a runs in the second launch: the first one's end did not end it
    assert len(started) == 3
    refresher.done("a", True)             # wanted (before its fetch) and written: served, nothing more
    assert len(started) == 3 and refresher.spared == 1
    refresher(["a"])                      # nothing runs any more: a starts at once
    assert [k for k, _ in started][-1] == ["a"]
    assert refresher.failed == 0


def test_a_request_before_the_running_fetch_is_served_by_its_write() -> None:
    from concurrent.futures import Future

    started: list[list[str]] = []

    def start(keys: list[str], watch: HotRefresher) -> Future[None]:
        started.append(keys)
        return Future()

    refresher = HotRefresher(start)
    refresher(["a", "b", "c"])
    refresher(["a", "b", "c"])            # wanted again before any source request went
    refresher.fetching("c")
    refresher(["c"])                      # c: wanted again after its request went
    refresher.done("a", True)             # written: its fetch saw the change, nothing more
    refresher.done("b", False)            # not written (fenced, failed, lease held): one more
    refresher.done("c", True)             # written, but its fetch may predate the change: one more
    assert started == [["a", "b", "c"], ["b"], ["c"]]
    assert refresher.spared == 1


def test_keys_that_end_in_one_turn_start_their_next_refresh_in_one_batch() -> None:
    from concurrent.futures import Future

    started: list[list[str]] = []
    deferred: list[Callable[[], None]] = []

    def start(keys: list[str], watch: HotRefresher) -> Future[None]:
        started.append(keys)
        return Future()

    refresher = HotRefresher(start, defer=deferred.append)
    refresher(["a", "b", "c"])
    for key in ("a", "b", "c"):
        refresher.fetching(key)
    refresher(["a", "b"])                 # both wanted again
    refresher.done("a", True)
    refresher.done("b", True)
    refresher.done("c", True)             # not wanted again: ends
    assert started == [["a", "b", "c"]] and len(deferred) == 1
    refresher(["a"])                      # a waits for its deferred launch: coalesces
    deferred.pop()()
    assert started == [["a", "b", "c"], ["a", "b"]]
    refresher(["c"])
    assert started[-1] == ["c"]


def test_idle_consumers_without_pending_entries_are_pruned(
        redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    from cachewarm.invalidation import consumer as consumer_module
    from cachewarm.redis_layer.keys import CONSUMER_GROUP

    monkeypatch.setattr(consumer_module, "PRUNE_IDLE_MS", -1)
    monkeypatch.setattr(consumer_module, "PRUNE_INTERVAL", 0.0)
    redis_client.xgroup_create(INVALIDATION_STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    redis_client.xgroup_createconsumer(INVALIDATION_STREAM, CONSUMER_GROUP, "ghost:1")
    publish_invalidation("k:1", redis=redis_client)
    redis_client.xreadgroup(CONSUMER_GROUP, "ghost:2", {INVALIDATION_STREAM: ">"})  # dies holding an entry
    live = InvalidationConsumer(Settings.load(redis_url=redis_url), name="live", block_ms=10)
    try:
        live.poll()
        live.poll()
    finally:
        live.close()
    names = {c["name"] for c in redis_client.xinfo_consumers(INVALIDATION_STREAM, CONSUMER_GROUP)}
    assert names == {b"live", b"ghost:2"}
