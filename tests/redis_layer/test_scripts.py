"""The Lua scripts (cachewarm/redis_layer/lua/): every key they touch comes in KEYS, and every path keeps working
when Redis forgets its scripts (SCRIPT FLUSH, as after a restart) in the middle of a run."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import pytest
import redis

from cachewarm import AsyncCache, Cache, Settings, publish_invalidation
from cachewarm.invalidation.apply import apply_events
from cachewarm.invalidation.consumer import InvalidationConsumer
from cachewarm.invalidation.events import Event
from cachewarm.redis_layer import script_calls, scripts
from cachewarm.redis_layer.connections import async_client
from cachewarm.redis_layer.keys import KeyLayout
from cachewarm.warming.context import RefreshContext, make_http_client
from cachewarm.warming.refresh import refresh_batch
from cachewarm.warming.scan import scan
from tests.support import sources_fixture
from tests.support.redis_cluster import topologies

L = KeyLayout()
KEYSPACES = """
[keyspaces.item]
pattern = "item:{id}"
source = "python:tests.support.sources_fixture:counted"
ttl = 60
refresh_ahead = 30
tags = ["items"]
"""


@pytest.fixture
def settings(make_settings: Callable[..., Settings], write_config: Callable[[str], Path]) -> Settings:
    sources_fixture.counter.clear()
    return make_settings(write_config(KEYSPACES), stats_flush_interval=3600)


@pytest.fixture
def cache(settings: Settings) -> Iterator[Cache]:
    with Cache(settings=settings) as made:
        yield made


# ---- SCRIPT FLUSH mid-run ---------------------------------------------------------------------------------------
def test_reads_and_writes_survive_a_script_flush(cache: Cache, redis_client: redis.Redis) -> None:
    assert cache.get("item:1") == {"id": "1", "n": 1}          # miss + load: ACQUIRE, WRITE
    redis_client.script_flush()
    assert cache.delete("item:1")                              # INVALIDATE_KEY
    redis_client.script_flush()
    assert cache.get("item:1") == {"id": "1", "n": 2}
    redis_client.script_flush()
    assert cache.set("item:2", {"v": 2})
    redis_client.script_flush()
    assert cache.clear("item:") == 2                           # pipelined INVALIDATE_KEY
    redis_client.script_flush()
    cache.get("item:3")
    redis_client.script_flush()
    assert cache.invalidate_tag("items") == 1                  # TAG_MEMBERS, INVALIDATE_KEY (item:3's value)
    assert redis_client.get(L.value("item:3")) is None


async def test_the_async_client_survives_a_script_flush(settings: Settings, redis_client: redis.Redis) -> None:
    async with AsyncCache(settings=settings) as cache:
        assert await cache.get("item:1") == {"id": "1", "n": 1}
        redis_client.script_flush()
        assert await cache.delete("item:1")
        redis_client.script_flush()
        assert await cache.get("item:1") == {"id": "1", "n": 2}
        redis_client.script_flush()
        assert await cache.set("item:2", {"v": 2})
        redis_client.script_flush()
        assert await cache.clear("item:") == 2
        redis_client.script_flush()
        await cache.get("item:3")
        redis_client.script_flush()
        assert await cache.invalidate_tag("items") == 1


def test_reads_keep_working_while_scripts_are_flushed_again_and_again(cache: Cache,
                                                                       redis_client: redis.Redis) -> None:
    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            redis_client.script_flush()

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        for i in range(200):
            assert cache.get(f"item:{i % 20}")["id"] == str(i % 20)
            cache.delete(f"item:{i % 20}")
    finally:
        stop.set()
        thread.join()


async def test_refresh_survives_a_script_flush(settings: Settings, redis_client: redis.Redis) -> None:
    ctx = RefreshContext(settings, async_client(settings.redis_url, timeout=5), make_http_client(settings), "w1")
    try:
        redis_client.script_flush()                            # pipelined LEASE, TAKE, WRITE
        assert await refresh_batch(ctx, [f"item:{i}" for i in range(10)]) == {"ok": 10}
        redis_client.script_flush()
        assert await refresh_batch(ctx, ["item:1"], force=True) == {"ok": 1}
    finally:
        await ctx.http.aclose()
        await ctx.redis.aclose()
    assert redis_client.exists(*(L.value(f"item:{i}") for i in range(10))) == 10


def test_invalidation_survives_a_script_flush(cache: Cache, settings: Settings, redis_client: redis.Redis) -> None:
    for i in range(3):
        cache.get(f"item:{i}")
    redis_client.script_flush()
    applied = apply_events(redis_client, [Event("1-0", "key", "item:0"), Event("2-0", "tag", "items")],
                           layout=L, fence_ttl=60)
    assert set(applied.outcomes.values()) == {"applied"}
    assert sorted(applied.keys) == ["item:0", "item:1", "item:2"]
    assert redis_client.exists(*(L.value(f"item:{i}") for i in range(3))) == 0

    consumer = InvalidationConsumer(settings, name="c1", block_ms=0)
    consumer.ensure_group()
    cache.get("item:5")
    publish_invalidation("item:5", redis=redis_client, settings=settings)
    redis_client.script_flush()                                # CHECK_AND_READ, then the pipelined apply
    assert consumer.poll(block_ms=0) == 1
    assert redis_client.get(L.value("item:5")) is None


def test_counters_flush_and_scan_survive_a_script_flush(cache: Cache, settings: Settings,
                                                          redis_client: redis.Redis) -> None:
    cache.get("item:1")
    cache.get("item:1")
    redis_client.script_flush()
    assert cache.flush_stats()                                # FLUSH
    assert float(redis_client.hget(L.stats, "hit:item") or 0) == 1
    redis_client.script_flush()
    result = scan(redis_client, settings)                      # HOTSET, DUE, CLAIM, UNLOCK
    assert result.ran and result.keyspaces["item"].hot_keys == 1
    assert redis_client.get(L.scan_lock) is None


@topologies
def test_a_large_tag_is_drained_batch_by_batch(cache: Cache, redis_client: redis.Redis) -> None:
    count = 1234
    for i in range(count):
        cache.set(f"item:{i}", {"i": i})
    redis_client.script_flush()
    assert cache.invalidate_tag("items") == count
    assert redis_client.zcard(L.tag("items")) == count  # members stay: a load of one may still be in flight
    assert not list(redis_client.scan_iter(match=L.value_prefix + "*"))
    assert cache.invalidate_tag("items") == 0


def test_a_dead_workers_lease_is_taken_over(redis_client: redis.Redis, settings: Settings) -> None:
    redis_client.set(L.lease("item:1"), "w=gone|x")
    redis_client.set(L.lease("item:2"), "w=alive|x")
    redis_client.set(L.worker("alive"), "1")
    for key, owner in (("item:1", "gone"), ("item:2", "alive")):
        first = scripts.run(redis_client, script_calls.lease(L, key=key, token="w=me|1", lease_ms=1000,
                                                             ahead_ms=None))
        assert first.status is script_calls.LeaseStatus.HELD and first.owner == owner
    # The refresh path names a suspect only once it found its heartbeat gone (it lives in a slot of its own).
    again = scripts.run(redis_client, script_calls.lease(L, key="item:1", token="w=me|1", lease_ms=1000,
                                                         ahead_ms=None, suspect="gone"))
    assert again.status is script_calls.LeaseStatus.TAKEN
    other = scripts.run(redis_client, script_calls.lease(L, key="item:2", token="w=me|1", lease_ms=1000,
                                                         ahead_ms=None, suspect="gone"))
    assert other.status is script_calls.LeaseStatus.HELD and other.owner == "alive"


def test_a_merged_lease_and_write_answer_each_key_as_its_own_call_would(redis_client: redis.Redis) -> None:
    """LEASE and WRITE of many keys in one call (the refresh path on one Redis): per key, the same replies and the
    same effects as one call per key."""
    fresh = f"{10**13 - 1:013d}|{0:013d}|v||1"
    redis_client.set(L.value("m:fresh"), fresh)                     # not due
    redis_client.set(L.lease("m:held"), "w=other|x")                 # held by another worker
    keys = ["m:new", "m:fresh", "m:held", "m:late", "m:fenced", "m:old"]
    redis_client.set(L.value("m:late"), f"{1:013d}|{0:013d}|v||1")   # expired: late, had a value
    leased = scripts.run(redis_client, script_calls.lease_many(L, [(k, f"w=me|{k}") for k in keys], lease_ms=10_000,
                                                               ahead_ms=60_000))
    status = script_calls.LeaseStatus
    assert [r.status for r in leased] == [status.TAKEN, status.NOT_DUE, status.HELD, status.TAKEN, status.TAKEN,
                                          status.TAKEN]
    assert leased[2].owner == "other" and leased[3].late and leased[3].had_value and not leased[0].had_value
    assert redis_client.get(L.lease("m:new")) == b"w=me|m:new" and redis_client.get(L.lease("m:held")) == b"w=other|x"
    scripts.run(redis_client, script_calls.invalidate_key(L, key="m:fenced", version=None, fence_ttl=60))
    redis_client.hset(L.fence("m:old"), "v", 9)                      # a version floor above the refresh's
    by_key = dict(zip(keys, leased, strict=True))
    items = [script_calls.WriteItem(k, f"{10**13 - 1:013d}|{0:013d}|v|5|{{}}", 60_000, by_key[k].fence, f"w=me|{k}",
                                    5) for k in ("m:new", "m:late", "m:fenced", "m:old")]
    written = scripts.run(redis_client, script_calls.write_many(L, items, fence_ttl=60))
    ws = script_calls.WriteStatus
    assert written == [ws.WRITTEN, ws.WRITTEN, ws.REJECTED, ws.REJECTED]
    assert redis_client.get(L.value("m:new")) == items[0].envelope.encode()  # type: ignore[union-attr]
    assert not redis_client.exists(L.value("m:fenced"), L.value("m:old"))
    assert not redis_client.exists(*(L.lease(k) for k in ("m:new", "m:late", "m:fenced", "m:old")))  # all freed


# ---- every key in KEYS ------------------------------------------------------------------------------------------
LUA = resources.files("cachewarm.redis_layer") / "lua"
# Commands whose key is not their first argument: (command, position of the key among the arguments).
KEY_POSITION = {"XINFO": 1}
NO_KEY = {"TIME"}


def _lua_files() -> list[str]:
    return sorted(p.name for p in LUA.iterdir() if p.name.endswith(".lua"))


def _calls(source: str) -> Iterator[list[str]]:
    """The argument lists of every redis.call / redis.pcall (also as `pcall(redis.call, ...)`)."""
    for match in re.finditer(r"redis\.p?call\(|pcall\(redis\.call,", source):
        depth, start, args, i = 0, match.end(), [], match.end()
        while True:
            ch = source[i]
            if ch == "'":
                i = source.index("'", i + 1)
            elif ch in "({[":
                depth += 1
            elif ch in ")}]" and depth:
                depth -= 1
            elif ch == ")" and not depth:
                args.append(source[start:i].strip())
                break
            elif ch == "," and not depth:
                args.append(source[start:i].strip())
                start = i + 1
            i += 1
        yield args


def _is_key(expr: str) -> bool:
    return bool(re.fullmatch(r"KEYS\[[^\]]+\]|[a-z_]*_key", expr))


@pytest.mark.parametrize("name", _lua_files())
def test_every_key_a_script_touches_comes_in_keys(name: str) -> None:
    source = (LUA / name).read_text()
    # A name ending in _key holds a key: it is bound from KEYS (or is a preamble function's parameter).
    for names, values in re.findall(r"local ([\w, ]+) = ([^\n]+)", source):
        for var, value in zip([n.strip() for n in names.split(",")], values.split(","), strict=False):
            if var.endswith("_key"):
                assert value.strip().startswith("KEYS["), f"{name}: {var} = {value.strip()}"
    for var in re.findall(r"for [\w_]+, ([\w_]+) in ", source):
        if var.endswith("_key"):
            assert re.search(rf"for [\w_]+, {var} in ipairs\(KEYS\)", source), f"{name}: {var}"
    for args in _calls(source):
        command = args[0].strip("'").upper()
        if command in NO_KEY:
            continue
        position = args.index("'STREAMS'") if command == "XREADGROUP" else KEY_POSITION.get(command, 0)
        key = args[1 + position]
        assert _is_key(key), f"{name}: {command} on {key!r}, a key not taken from KEYS"


def test_the_check_catches_a_key_built_in_lua() -> None:
    built = "local prefix = ARGV[1]\nredis.call('DEL', prefix .. ARGV[2])\n"
    assert any(not _is_key(args[1]) for args in _calls(built))


def test_every_script_is_loaded_from_its_file_with_the_preamble() -> None:
    for name in _lua_files():
        if name != "preamble.lua":
            loaded = scripts.script(name.removesuffix(".lua"))
            assert loaded.source.startswith((LUA / "preamble.lua").read_text())


# ---- every script call stays in one hash slot (Redis Cluster) ---------------------------------------------------
def _one_slot_calls() -> Iterator[scripts.Call[object]]:
    for key in ("product:42", "a}b", "x{y}z", "ü:1"):
        yield script_calls.acquire(L, key=key, token="t", lease_ms=1)
        yield script_calls.write(L, key=key, envelope="e", px=1, fence="0", lease_token="t", version=1,
                                 fence_ttl=1, bump=True)
        yield script_calls.release(L, key=key, lease_token="t")
        yield script_calls.invalidate_key(L, key=key, version=3, fence_ttl=1)
        yield script_calls.lease(L, key=key, token="t", lease_ms=1, ahead_ms=1, suspect="w")
        yield script_calls.remove(L, key=key, fence="0", lease_token="t")
        yield script_calls.seen(L, key=key, keyspace="product")
        yield script_calls.forget(L, key=key, keyspace="product")
        yield script_calls.enlist(L, tag=key, key="k", keep_ms=1)
        yield script_calls.tag_members(L, tag=key, cursor="0", count=1)
        yield script_calls.due(L, keys=[key], ahead_ms=1)
        yield script_calls.claim(L, keys=[key], claim_ms=1)
        yield script_calls.unclaim(L, keys=[key])
    for shard in range(3):
        yield script_calls.hotset(L, keyspace="product", shard=shard, threshold=1.0, half_life_ms=1, cold_factor=2.0)
        yield script_calls.hot_members(L, keyspace="product", shard=shard, keys=["p:1"], threshold=1.0, half_life_ms=1)
    yield from script_calls.flush(L, half_life_ms=1, rebase_half_lives=1, reads={"p": {f"p:{i}": 1 for i in range(99)}},
                                  limits={})
    yield script_calls.check_and_read(L, stream="cachewarm:invalidations", group="g", consumer="c", count=1, now_ms=1,
                                      acks=[])
    yield script_calls.record_gap(L, upper="1-0", now_ms=1, consumer="c", force=False)
    yield script_calls.gap_answered(L, upper="1-0")


def test_every_script_call_touches_one_hash_slot() -> None:
    from redis.crc import key_slot
    calls = list(_one_slot_calls())
    assert {call.script.name for call in calls} >= {n.removesuffix(".lua") for n in _lua_files()} - {
        "preamble", "take", "unlock"}  # take, unlock: one key
    for call in calls:
        slots = {key_slot(k.encode() if isinstance(k, str) else k) for k in call.keys}
        assert len(slots) == 1, f"{call.script.name}: keys {call.keys} span slots {slots}"
