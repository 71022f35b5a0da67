"""The refresh path against a real redis-server and an HTTP source on a socket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio

from cachewarm import Cache, Settings
from cachewarm.demo.source import SourceServer
from cachewarm.redis_layer import envelope, script_calls, scripts
from cachewarm.redis_layer.keys import KeyLayout, shard_of
from cachewarm.warming import refresh
from cachewarm.warming.context import RefreshContext
from cachewarm.warming.refresh import refresh_batch, stats
from tests.support.refresh_context import refresh_context

L = KeyLayout()
pytestmark = pytest.mark.source(latency=0.01)


@pytest.fixture
def settings(source: SourceServer, write_config: Callable[[str], Path],
             make_settings: Callable[..., Settings]) -> Settings:
    config = write_config(f"""
        [keyspaces.product]
        pattern = "product:{{id}}"
        source = "{source.url}/products/{{id}}"
        ttl = 30
        refresh_ahead = 10
        max_stale = 60
        tags = ["products"]

        [keyspaces.narrow]
        pattern = "narrow:{{id}}"
        source = "{source.url}/items/{{id}}"
        ttl = 30
        refresh_ahead = 10
        concurrency = 3
    """)
    return make_settings(config, refresh_retries=2)


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[RefreshContext]:
    async with refresh_context(settings) as context:
        yield context


def _entry(client: redis.Redis, key: str) -> envelope.Entry | None:
    raw = client.get(L.value(key))
    return envelope.decode(raw) if raw is not None else None


async def test_a_missing_key_is_loaded_and_its_claim_released(ctx: RefreshContext, source: SourceServer,
                                                              redis_client: redis.Redis) -> None:
    redis_client.set(L.claim("product:1"), "1")
    counts = await refresh_batch(ctx, ["product:1"])
    assert counts == {"ok": 1}
    entry = _entry(redis_client, "product:1")
    assert entry is not None and entry.value["id"] == "1"
    assert redis_client.pttl(L.value("product:1")) > 60_000   # ttl + max_stale
    figures = stats(redis_client, L)
    assert figures.pop("fetch_us:product") > 0  # the source's measured latency (refresh by value's miss cost)
    assert figures == {"refreshed:product": 1, "fetches:product": 1}  # its first load: not late (it was, issue 26)
    assert not redis_client.exists(L.claim("product:1"))
    assert redis_client.zscore(L.tag("products"), "product:1") is not None


async def test_a_key_no_longer_due_is_skipped_without_a_source_request(ctx: RefreshContext, source: SourceServer,
                                                                       redis_client: redis.Redis) -> None:
    await refresh_batch(ctx, ["product:2"])
    source.reset_stats()
    counts = await refresh_batch(ctx, ["product:2"])
    assert counts == {"skipped": 1}
    assert source.stats()["requests"] == 0
    # force (cachewarm warm) loads anyway
    assert await refresh_batch(ctx, ["product:2"], force=True) == {"ok": 1}


async def test_an_invalidation_during_the_fetch_fences_the_write(ctx: RefreshContext, source: SourceServer,
                                                                 make_cache: Callable[..., Cache],
                                                                 settings: Settings,
                                                                 redis_client: redis.Redis) -> None:
    source.configure(latency=0.5)
    cache = make_cache(settings.config)
    task = asyncio.create_task(refresh_batch(ctx, ["product:3"]))
    while not redis_client.exists(L.lease("product:3")):
        await asyncio.sleep(0.01)
    await asyncio.to_thread(cache.delete, "product:3")
    assert await task == {"fenced": 1}
    assert _entry(redis_client, "product:3") is None
    assert not redis_client.exists(L.lease("product:3"))


async def test_a_tag_invalidation_during_the_fetch_fences_the_write(ctx: RefreshContext, source: SourceServer,
                                                                    make_cache: Callable[..., Cache],
                                                                    settings: Settings,
                                                                    redis_client: redis.Redis) -> None:
    source.configure(latency=0.5)
    cache = make_cache(settings.config)
    task = asyncio.create_task(refresh_batch(ctx, ["product:4"]))
    while not redis_client.exists(L.lease("product:4")):
        await asyncio.sleep(0.01)
    await asyncio.to_thread(cache.invalidate_tag, "products")
    assert await task == {"fenced": 1}
    assert _entry(redis_client, "product:4") is None


async def test_404_removes_the_key_and_its_hot_and_pinned_entries(ctx: RefreshContext, source: SourceServer,
                                                                   redis_client: redis.Redis) -> None:
    await refresh_batch(ctx, ["product:5"])
    source.delete_item(5)
    redis_client.zadd(L.hot("product", shard_of("product:5")), {"product:5": 10})
    redis_client.sadd(L.pinned("product"), "product:5")
    assert await refresh_batch(ctx, ["product:5"], force=True) == {"not_found": 1}
    assert not redis_client.exists(L.value("product:5"))
    assert redis_client.zscore(L.hot("product", shard_of("product:5")), "product:5") is None
    assert not redis_client.sismember(L.pinned("product"), "product:5")


async def test_source_failure_retries_then_keeps_the_old_value_as_stale(ctx: RefreshContext,
                                                                         source: SourceServer,
                                                                         redis_client: redis.Redis) -> None:
    await refresh_batch(ctx, ["product:6"])
    before = _entry(redis_client, "product:6")
    source.configure(status_override=500)
    source.reset_stats()
    assert await refresh_batch(ctx, ["product:6"], force=True) == {"error": 1}
    assert source.stats()["requests"] == 3                    # 1 + refresh_retries
    assert _entry(redis_client, "product:6") == before
    assert not redis_client.exists(L.lease("product:6"))
    figures = stats(redis_client, L)
    assert figures["failed:product"] == 1 and figures["stale:product"] == 1


async def test_concurrency_limit_per_keyspace(ctx: RefreshContext, source: SourceServer) -> None:
    source.configure(latency=0.05)
    counts = await refresh_batch(ctx, [f"narrow:{i}" for i in range(100, 120)])
    assert counts == {"ok": 20}
    assert source.stats()["max_in_flight"] <= 3


async def test_a_batch_of_several_keyspaces_runs_each_under_its_own_limit(ctx: RefreshContext,
                                                                          source: SourceServer) -> None:
    """A batch's keys are taken in turn by each keyspace's own coroutines: every key once, whatever its keyspace
    (or none), the watch told of each, the narrow keyspace never above its concurrency."""
    source.configure(latency=0.05)
    keys = [*(f"narrow:{i}" for i in range(200, 210)), *(f"product:{i}" for i in range(200, 230)), "nope:1"]
    told: list[str] = []

    class Told:
        def fetching(self, key: str) -> None:
            pass

        def done(self, key: str, written: bool) -> None:
            told.append(key)

    counts = await refresh_batch(ctx, keys, watch=Told())
    assert counts == {"ok": 40, "unknown": 1}
    assert sorted(told) == sorted(keys)
    assert source.stats()["max_in_flight"] > 3          # the product keys ran beside the narrow ones


async def test_wasted_counts_a_refresh_of_a_key_nobody_read(ctx: RefreshContext, settings: Settings,
                                                            make_cache: Callable[..., Cache],
                                                            redis_client: redis.Redis) -> None:
    cache = make_cache(settings.config)
    await refresh_batch(ctx, ["product:7", "product:8"])
    cache.get("product:8")          # read between the two refreshes
    cache.flush_stats()
    await refresh_batch(ctx, ["product:7", "product:8"], force=True)
    figures = stats(redis_client, L)
    assert figures["wasted:product"] == 1
    assert figures["refreshed:product"] == 4


def test_a_merged_seen_answers_each_key_as_its_own_call_would(redis_client: redis.Redis) -> None:
    """SEEN of many keys (of several shards and keyspaces) in one call: per key, in order, what one call each gives."""
    items = [("product:1", "product"), ("product:2", "product"), ("narrow:1", "narrow"), ("product:3", "product")]
    assert len({shard_of(key) for key, _ in items}) > 1
    for key, keyspace in items:
        redis_client.zadd(L.hot(keyspace, shard_of(key)), {key: 5})
    assert scripts.run(redis_client, script_calls.seen_many(L, items)) == [False] * 4      # first refreshes
    redis_client.zincrby(L.hot("product", shard_of("product:2")), 1, "product:2")          # read in between
    redis_client.zincrby(L.hot("narrow", shard_of("narrow:1")), 1, "narrow:1")
    assert scripts.run(redis_client, script_calls.seen_many(L, items)) == [True, False, False, True]
    assert scripts.run(redis_client, script_calls.seen(L, key="narrow:1", keyspace="narrow")) is True


async def test_a_lease_of_a_dead_worker_is_taken_over_a_live_one_is_not(ctx: RefreshContext,
                                                                        redis_client: redis.Redis) -> None:
    redis_client.set(L.lease("product:9"), "w=alive.1|abc", px=60_000)
    redis_client.set(L.worker("alive.1"), "1", px=60_000)
    assert await refresh_batch(ctx, ["product:9"]) == {"busy": 1}
    redis_client.delete(L.worker("alive.1"))
    assert await refresh_batch(ctx, ["product:9"]) == {"ok": 1}
    # A reader's lease (no worker id) is respected until it expires.
    redis_client.set(L.lease("product:10"), "0123456789abcdef", px=60_000)
    assert await refresh_batch(ctx, ["product:10"]) == {"busy": 1}


async def test_token_bucket_shares_a_budget(redis_client: redis.Redis, redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        waits = [await scripts.arun(client, script_calls.take(bucket=L.rate("s"), rate=1, burst=2)) for _ in range(3)]
    finally:
        await client.aclose()
    assert waits[:2] == [0, 0]            # a burst of two
    assert 0 < waits[2] <= 1000           # then one per second


def test_warm_cli_loads_and_pins_keys_from_a_file(settings: Settings, redis_client: redis.Redis, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from cachewarm.cli import cli

    monkeypatch.setenv("CACHEWARM_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("CACHEWARM_CONFIG", str(settings.config))
    keys = [f"product:{i}" for i in range(200, 260)]
    listing = tmp_path / "keys.txt"
    listing.write_text("# hot products\n" + "\n".join(keys) + "\n\n")
    result = CliRunner().invoke(cli, ["warm", "--file", str(listing), "narrow:1"])
    assert result.exit_code == 0, result.output
    assert "warmed and pinned 61 keys: 61 ok" in result.output
    assert all(_entry(redis_client, k) is not None for k in keys)
    assert {m.decode() for m in redis_client.smembers(L.pinned("product"))} == set(keys)
    assert redis_client.smembers(L.pinned("narrow")) == {b"narrow:1"}

    bad = CliRunner().invoke(cli, ["warm", "nope:1"])
    assert bad.exit_code == 2 and "no keyspace pattern matches" in bad.output


async def test_a_forced_refresh_waits_for_a_held_lease_and_loads_if_the_holder_wrote_nothing(
        ctx: RefreshContext, source: SourceServer, redis_client: redis.Redis) -> None:
    """An invalidated hot key whose lease a reader holds: the reader's write is refused by the fence (it took its
    token before the invalidation), so the hot refresh must not give up on "busy" or the key stays missing."""
    redis_client.set(L.lease("product:11"), "0123456789abcdef", px=60_000)
    task = asyncio.create_task(refresh_batch(ctx, ["product:11"], force=True))
    await asyncio.sleep(0.3)
    assert not task.done() and source.stats()["requests"] == 0   # waiting for the holder, not fetching
    redis_client.delete(L.lease("product:11"))                    # the holder gives up, having written nothing
    assert await task == {"ok": 1}
    entry = _entry(redis_client, "product:11")
    assert entry is not None and entry.value["id"] == "11"


async def test_a_forced_refresh_after_a_held_lease_skips_the_holders_fresh_value(
        ctx: RefreshContext, source: SourceServer, redis_client: redis.Redis) -> None:
    redis_client.set(L.lease("product:12"), "0123456789abcdef", px=60_000)
    task = asyncio.create_task(refresh_batch(ctx, ["product:12"], force=True))
    await asyncio.sleep(0.1)
    redis_client.set(L.value("product:12"), envelope.encode('{"id": "12"}', fetched_ms=int(time.time() * 1000),
                                                           ttl_ms=30_000), px=30_000)
    redis_client.delete(L.lease("product:12"))                    # the holder wrote a fresh value
    assert await task == {"skipped": 1}
    assert source.stats()["requests"] == 0


async def test_a_forced_refresh_gives_up_on_a_lease_held_past_its_wait(
        ctx: RefreshContext, source: SourceServer, redis_client: redis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refresh, "BUSY_RETRY_FOR", 0.2)
    redis_client.set(L.lease("product:13"), "0123456789abcdef", px=60_000)
    assert await refresh_batch(ctx, ["product:13"], force=True) == {"busy": 1}
    # not forced: one try, as before
    assert await refresh_batch(ctx, ["product:13"]) == {"busy": 1}
