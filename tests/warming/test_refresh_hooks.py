"""The refresh path tells the hooks every key's outcome, counted exactly, in one call per batch and outcome."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis

from cachewarm import Settings
from cachewarm.demo.source import SourceServer
from cachewarm.hooks import Hooks, get_hooks, set_hooks
from cachewarm.redis_layer.connections import async_client
from cachewarm.warming.context import RefreshContext, make_http_client
from cachewarm.warming.refresh import refresh_batch

pytestmark = pytest.mark.source(latency=0.01)


class Recording(Hooks):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def refresh(self, keyspace: str, outcome: str, count: int = 1) -> None:
        self.calls.append((keyspace, outcome, count))

    def totals(self) -> Counter[tuple[str, str]]:
        out: Counter[tuple[str, str]] = Counter()
        for keyspace, outcome, count in self.calls:
            out[keyspace, outcome] += count
        return out


@pytest.fixture
def recording() -> Iterator[Recording]:
    previous, hooks = get_hooks(), Recording()
    set_hooks(hooks)
    yield hooks
    set_hooks(previous)


@pytest.fixture
async def ctx(source: SourceServer, write_config: Callable[[str], Path],
              make_settings: Callable[..., Settings]) -> AsyncIterator[RefreshContext]:
    config = write_config(f"""
        [keyspaces.product]
        pattern = "product:{{id}}"
        source = "{source.url}/products/{{id}}"
        ttl = 30
        refresh_ahead = 10
    """)
    settings = make_settings(config)
    context = RefreshContext(settings, async_client(settings.redis_url, timeout=5), make_http_client(settings),
                             "test-worker")
    yield context
    await context.http.aclose()
    await context.redis.aclose()


async def test_each_outcome_is_told_once_per_batch_with_its_count(ctx: RefreshContext, recording: Recording,
                                                                  redis_client: redis.Redis) -> None:
    keys = [f"product:{i}" for i in range(30)]
    assert await refresh_batch(ctx, keys[:10]) == {"ok": 10}
    assert recording.calls == [("product", "ok", 10)]
    recording.calls.clear()
    counts = await refresh_batch(ctx, keys)  # the first 10 are fresh now: skipped
    assert counts == {"ok": 20, "skipped": 10}
    assert sorted(recording.calls) == [("product", "ok", 20), ("product", "skipped", 10)]
    assert not ctx.tally


async def test_keys_of_no_keyspace_are_not_told(ctx: RefreshContext, recording: Recording) -> None:
    """As before the batching: the hooks hear of keys with a keyspace only (no label for the others)."""
    assert await refresh_batch(ctx, ["product:1", "nowhere:1", "nowhere:2"]) == {"ok": 1, "unknown": 2}
    assert recording.totals() == {("product", "ok"): 1}
