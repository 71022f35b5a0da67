"""The near cache's core on a real redis-server: every cause of change drops the local copy, a broken or lagging
link drops everything, and a value read while its key changed is never kept."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from cachewarm.demo.redis_server import RedisServer
from cachewarm.near.cache import LocalBounds, NearCache
from cachewarm.near.link import LINK_NAME, disjoint_prefixes
from cachewarm.near.store import LocalStore
from tests.support.waiting import wait_until

PREFIX = "cachewarm:v:product:"
KEY = PREFIX + "1"


@pytest.fixture
def near(redis_url: str) -> Iterator[NearCache]:
    cache = NearCache(redis_url, {"product": (PREFIX, LocalBounds(100, 1 << 20))}, retry_interval=0.05)
    yield cache
    cache.close()


def keep(near: NearCache, key: str = KEY, value: object = "v1", ttl_ms: int = 60_000) -> bool:
    ticket = near.ticket(key)
    now = int(time.time() * 1000)
    try:
        return near.keep("product", key, ticket, value, fetched_ms=now, expires_ms=now + ttl_ms, raw_size=10)
    finally:
        near.release(key)


def served(near: NearCache, key: str = KEY) -> object:
    entry = near.serve("product", key)
    return None if entry is None else entry.value


def test_a_kept_copy_is_served(near: NearCache) -> None:
    assert near.serve("product", KEY) is None  # the first read connects the link
    assert keep(near)
    assert served(near) == "v1"


@pytest.mark.parametrize("change", [
    lambda r: r.set(KEY, "x"),
    lambda r: r.delete(KEY),
    lambda r: r.pexpire(KEY, 1),
    lambda r: r.flushdb(),
    lambda r: r.flushall(),
    lambda r: r.eval("redis.call('SET', KEYS[1], 'y')", 1, KEY),
], ids=["set", "delete", "expiry", "flushdb", "flushall", "lua"])
def test_every_change_in_redis_drops_the_copy(near: NearCache, redis_client: redis.Redis, change) -> None:
    redis_client.set(KEY, "v1")
    near.serve("product", KEY)
    assert keep(near)
    change(redis_client)
    wait_until(lambda: served(near) is None, timeout=2, what="the copy dropped")


def test_keys_outside_the_prefixes_do_not_drop(near: NearCache, redis_client: redis.Redis) -> None:
    near.serve("product", KEY)
    assert keep(near)
    redis_client.set("cachewarm:v:user:1", "x")
    time.sleep(0.05)
    assert served(near) == "v1"


def test_a_value_whose_key_changed_during_its_read_is_not_kept(near: NearCache, redis_client: redis.Redis) -> None:
    near.serve("product", KEY)
    ticket = near.ticket(KEY)          # the read asks Redis ...
    redis_client.set(KEY, "v2")        # ... a writer replaces the value meanwhile ...
    wait_until(lambda: near.serve("product", KEY) is None and near.link.invalidations > 0, timeout=2,
               what="the push applied")
    now = int(time.time() * 1000)      # ... and the read's (older) answer arrives after the push: not kept
    assert not near.keep("product", KEY, ticket, "v1", fetched_ms=now, expires_ms=now + 60_000, raw_size=2)
    assert served(near) is None


def test_expired_copies_are_not_served(near: NearCache) -> None:
    near.serve("product", KEY)
    assert keep(near, ttl_ms=30)
    time.sleep(0.05)
    assert served(near) is None


def test_a_killed_link_drops_everything_and_comes_back(near: NearCache, redis_client: redis.Redis) -> None:
    near.serve("product", KEY)
    assert keep(near)
    for client in redis_client.client_list():
        if client["name"] == LINK_NAME:
            redis_client.client_kill_filter(_id=client["id"])
    assert served(near) is None        # the read finds the end of file: everything dropped
    assert near.link.resets == 1
    wait_until(lambda: near.serve("product", KEY) is None and near.link.healthy, timeout=2, what="the link back")
    assert keep(near, value="v3")
    assert served(near) == "v3"


def test_a_lagging_link_serves_nothing_local(redis_url: str, redis_client: redis.Redis) -> None:
    near = NearCache(redis_url, {"product": (PREFIX, LocalBounds(100, 1 << 20))}, ping_interval=0.01,
                     lag_limit=0.05, connect_timeout=2.0)
    try:
        near.serve("product", KEY)
        assert keep(near)
        time.sleep(0.02)
        near.serve("product", KEY)     # sends the ping
        redis_client.client_pause(300, all=True)   # Redis answers nothing for 0.3 s
        time.sleep(0.02)
        near.serve("product", KEY)
        time.sleep(0.1)
        assert served(near) is None    # the ping's answer is late: nothing local
        wait_until(lambda: near.serve("product", KEY) is None and near.link.healthy, timeout=2,
                   what="the link healthy again")
        assert near.link.resets >= 1
    finally:
        near.close()


def test_a_server_down_means_no_local_reads() -> None:
    with RedisServer() as server:
        near = NearCache(server.url(0), {"product": (PREFIX, LocalBounds(100, 1 << 20))}, retry_interval=0.05)
        near.serve("product", KEY)
        assert keep(near)
        server.stop()
        wait_until(lambda: served(near) is None, timeout=2, what="the copy dropped")
        assert not keep(near)
        near.close()


def test_store_bounds_evict_the_least_recently_used() -> None:
    store = LocalStore(max_entries=2, max_bytes=10_000)
    for key in ("a", "b"):
        store.put(key, key, fetched_ms=0, expires_ms=10**15, raw_size=1)
    assert store.get("a", 0) is not None          # a is now the most recently used
    store.put("c", "c", fetched_ms=0, expires_ms=10**15, raw_size=1)
    assert "b" not in store and "a" in store and "c" in store
    assert store.evictions == 1
    small = LocalStore(max_entries=100, max_bytes=600)
    assert not small.put("big", "x", fetched_ms=0, expires_ms=10**15, raw_size=1000)
    for i in range(5):
        small.put(f"k{i}", i, fetched_ms=0, expires_ms=10**15, raw_size=10)
    assert small.bytes <= 600 and len(small) == 2


def test_overlapping_prefixes_are_merged() -> None:
    assert sorted(disjoint_prefixes(["a:b:", "a:", "c:", "a:"])) == ["a:", "c:"]


def test_local_bounds_need_local(write_config) -> None:
    from cachewarm import Settings
    from cachewarm.errors import ConfigError

    path = write_config('[keyspaces.p]\npattern = "p:{id}"\nsource = "python:x:y"\nttl = 5\nlocal_max_entries = 5\n')
    with pytest.raises(ConfigError, match="local_max_entries needs local = true"):
        Settings.load(config=path).load_keyspaces()


def test_value_prefix_follows_the_layout() -> None:
    from cachewarm.near.cache import value_prefix
    from cachewarm.redis_layer.keys import KeyLayout

    layout = KeyLayout("app:")
    prefix = value_prefix(layout, "product:{id}")
    assert layout.value("product:42").startswith(prefix) and prefix.startswith("app:")
    assert not layout.value("user:42").startswith(prefix)


def test_a_forked_child_opens_its_own_link(redis_url: str, tmp_path) -> None:
    import json
    import subprocess
    import sys

    from tests.support.near_load import KEYSPACE_TOML

    config = tmp_path / "near.toml"
    config.write_text(KEYSPACE_TOML)
    out = subprocess.run([sys.executable, "-m", "tests.support.near_fork", redis_url, str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = {line["who"]: line for line in map(json.loads, out.stdout.splitlines())}
    assert lines["child"]["entries_at_fork"] == 0      # no copies inherited
    assert lines["child"]["hits"] >= 1                 # the child served from its own copies
    assert lines["child"]["value"] == {"version": 2}   # and heard the change on its own link
    assert lines["parent"]["value"] == {"version": 2}  # the parent's link was left alone



def test_a_failed_handshake_closes_its_socket() -> None:
    """A server that accepts and hangs up (or answers the health check wrongly, as a cluster in a failover does):
    each attempt's socket is closed at once. It was left to the garbage collector, and the logged error's
    traceback kept it open (pytest's log capture held the record): a file descriptor per attempt, and a
    ResourceWarning in whatever test ran when it was collected."""
    import os
    import socket
    import threading

    from cachewarm.near.link import ServerAddress, TrackingLink

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        hung_up = threading.Semaphore(0)

        def hang_up() -> None:
            for _ in range(3):
                conn, _ = listener.accept()
                conn.close()
                hung_up.release()

        server = threading.Thread(target=hang_up, daemon=True)
        server.start()
        link = TrackingLink(ServerAddress.from_url(f"redis://127.0.0.1:{port}"), [PREFIX], on_keys=lambda keys: None,
                            on_reset=lambda: None, retry_interval=0.0)
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(3):
            assert link.check() is False
        for _ in range(3):
            assert hung_up.acquire(timeout=5)
        after = len(os.listdir("/proc/self/fd"))
        server.join(5)
    assert link.disconnected
    assert after == before
