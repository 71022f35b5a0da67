"""Per-key state stays within its bound (CACHEWARM_MAX_PLANS) however many distinct keys pass, on the read path and
the refresh path, and its eviction is gradual: keys read lately stay memoised (issue 17). Counts and tracemalloc's
total, not RSS: those are exact and fast; bench/soak.py measures the RSS of a whole `cachewarm run`."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from cachewarm import Cache, Settings
from cachewarm.config.keyspaces import KeyspaceRegistry
from cachewarm.read.plans import Planner
from cachewarm.redis_layer.connections import async_client
from cachewarm.warming.context import RefreshContext, make_http_client
from cachewarm.warming.refresh import refresh_batch

BOUND = 200
KEYSPACE = """
    [keyspaces.product]
    pattern = "product:{id}"
    source = "python:tests.read.test_memory:load"
    ttl = 30
    tags = ["p:{id}"]
"""


async def load(id: str) -> dict[str, str]:
    return {"id": id}


@pytest.fixture
def settings(write_config: Callable[[str], Path], make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(write_config(KEYSPACE), max_plans=BOUND)


def _count_finds(registry: KeyspaceRegistry, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often each key's keyspace was looked up, i.e. its plan derived."""
    finds: dict[str, int] = {}
    find = registry.find

    def counting(key: str) -> object:
        finds[key] = finds.get(key, 0) + 1
        return find(key)

    monkeypatch.setattr(registry, "find", counting)
    return finds


def test_the_read_path_keeps_at_most_the_bound_and_the_keys_read_lately(settings: Settings,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with Cache(settings=settings) as cache:
        planner = cache._planner
        finds = _count_finds(planner.keyspaces, monkeypatch)
        hot = "product:hot"
        for i in range(10 * BOUND):
            key = f"product:{i}"
            if i % 20:  # most keys written first (one round trip each), so that the test stays short
                cache.set(key, {"id": str(i)})
            assert cache.get(key) == {"id": str(i)}
            if i % 10 == 0:
                assert cache.get(hot) == {"id": "hot"}
            assert planner.memo_size <= BOUND
        assert finds[hot] == 1  # read all along: never evicted, never derived again
        # Gradual: the last bound/2 keys read are all still memoised; old ones are not.
        assert all(planner.memoised(f"product:{i}") for i in range(10 * BOUND - BOUND // 2, 10 * BOUND))
        assert not planner.memoised("product:0")
        assert planner.memo_size >= BOUND // 2


async def test_the_refresh_path_keeps_its_memory_bounded_under_fresh_keys(settings: Settings) -> None:
    ctx = RefreshContext(settings, async_client(settings.redis_url, timeout=5), make_http_client(settings), "mem")
    batch, batches = 250, 16  # 4,000 fresh keys: 20 times the bound

    async def refresh(n: int) -> None:
        keys = [f"product:{n * batch + i}" for i in range(batch)]
        counts = await refresh_batch(ctx, keys, force=True)
        assert sum(counts.values()) == batch

    try:
        for n in range(2):  # warm-up: connections, scripts, the memo's first generations
            await refresh(n)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for n in range(2, batches):
            await refresh(n)
            assert ctx.core.memo_size <= BOUND
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    finally:
        await ctx.http.aclose()
        await ctx.redis.aclose()
    # 3,500 more plans memoised without a bound would be ~0.8 MB (~240 B each; ~2.4 MB at the ~700 B each of
    # before); the bound holds ~0.05 MB.
    assert grown < 500_000, f"the refresh path grew {grown} bytes over 3,500 fresh keys"


def test_a_full_memo_costs_at_most_300_bytes_per_key_with_its_key_string(settings: Settings) -> None:
    """The plan of a key holds only what is the key's own (its value key, a pointer to its keyspace's shared part):
    ~240 B with the key string and the dict slots; CACHEWARM_MAX_PLANS x 300 B bounds a process's memo."""
    bound = 2000
    planner = Planner(settings.model_copy(update={"max_plans": bound}))
    planner.plan("product:warm")  # the keyspace's shared part, built once
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(5 * bound):  # fresh key strings, as a reader or a refresh task hands them over
            planner.plan(f"product:{1_000_000 + i}")
            assert planner.memo_size <= bound
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak < 300 * bound, f"the memo peaked at {peak / bound:.0f} bytes per key of its bound"
