"""Duplicate and reordered events with versions: whatever order the events, write-through sets and reads arrive in,
and however often each is delivered, the cache ends equal to the source.

Writers commit (version + 1), then either publish an invalidation with the version or write the new value through
with `cache.set(version=)`. Deliveries lag behind, repeat, and overtake each other; readers load in between. A cache
that stores whatever arrives last (no version floor) ends with an older version for some keys.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from cachewarm import Cache, Settings, publish_invalidation
from cachewarm.invalidation.apply import apply_events
from cachewarm.invalidation.consumer import InvalidationConsumer
from cachewarm.invalidation.events import Event
from cachewarm.redis_layer import envelope
from cachewarm.redis_layer.keys import CONSUMER_GROUP, INVALIDATION_STREAM
from tests.support.redis_cluster import topologies
from tests.support.waiting import wait_until

KEYS = 25
COMMITS = 8
SEED = 7

DB: dict[str, dict[str, Any]] = {}


def source(id: str) -> dict[str, Any] | None:
    row = DB.get(id)
    return dict(row) if row is not None else None


CONFIG = f"""
[keyspaces.acct]
pattern = "acct:{{id}}"
source = "python:{__name__}:source"
ttl = 300
version_field = "version"
"""


def _schedule(rng: random.Random) -> list[tuple[str, str, Any]]:
    """(op, id, payload): commit / deliver an event / deliver a set / read, in a random order that keeps each
    delivery after its commit; deliveries repeat (at least once) and overtake each other."""
    ops: list[tuple[str, str, Any]] = []
    waiting: list[tuple[str, str, Any]] = []
    commits = {f"{i}": 0 for i in range(KEYS)}
    while any(c < COMMITS for c in commits.values()) or waiting:
        choice = rng.random()
        open_ids = [i for i, c in commits.items() if c < COMMITS]
        if open_ids and (choice < 0.35 or not waiting):
            id = rng.choice(open_ids)
            commits[id] += 1
            version = commits[id] + 1
            ops.append(("commit", id, version))
            kind = rng.choice(["event", "event", "set"])
            for _ in range(rng.choice([1, 1, 2, 3])):
                waiting.append((kind, id, version))
        elif choice < 0.5:
            ops.append(("read", rng.choice(list(commits)), None))
        else:
            ops.append(waiting.pop(rng.randrange(len(waiting))))
    return ops


def _row(id: str, version: int) -> dict[str, Any]:
    return {"id": id, "version": version, "balance": version * 10}


def _check(cache: Cache, redis_client: redis.Redis) -> list[str]:
    wrong = []
    for id, row in DB.items():
        raw = redis_client.get(cache.layout.value(f"acct:{id}"))
        if raw is not None and envelope.decode(raw).value != row:
            wrong.append(f"acct:{id} cached {envelope.decode(raw).value}, source {row}")
        if cache.get(f"acct:{id}") != row:
            wrong.append(f"acct:{id} read {cache.get(f'acct:{id}')}, source {row}")
    return wrong


@topologies
@pytest.mark.parametrize("seed", [SEED, SEED + 1, SEED + 2])
def test_direct_apply_ends_equal_to_the_source(
        seed: int, write_config: Callable[[str], Path], make_cache: Callable[..., Cache],
        redis_client: redis.Redis) -> None:
    cache = make_cache(write_config(CONFIG))
    DB.clear()
    DB.update({f"{i}": _row(f"{i}", 1) for i in range(KEYS)})
    for n, (op, id, version) in enumerate(_schedule(random.Random(seed))):
        key = f"acct:{id}"
        if op == "commit":
            DB[id] = _row(id, version)
        elif op == "read":
            cache.get(key)
        elif op == "set":
            cache.set(key, _row(id, version), version=version)
        else:
            applied = apply_events(redis_client, [Event(f"1-{n}", "key", key, version)], layout=cache.layout,
                                   fence_ttl=cache.settings.fence_ttl)
            assert "error" not in applied.outcomes.values()
    assert _check(cache, redis_client) == []


@topologies
def test_through_the_stream_ends_equal_to_the_source(
        redis_url: str, write_config: Callable[[str], Path], make_cache: Callable[..., Cache],
        redis_client: redis.Redis, topology: str) -> None:
    config = write_config(CONFIG)
    cache = make_cache(config)
    DB.clear()
    DB.update({f"{i}": _row(f"{i}", 1) for i in range(KEYS)})
    settings = Settings.load(redis_url=redis_url, config=config, redis_cluster=topology == "cluster")
    consumer = InvalidationConsumer(settings, name="c1",
                                    block_ms=50, batch_size=7).start()
    try:
        for op, id, version in _schedule(random.Random(SEED + 10)):
            key = f"acct:{id}"
            if op == "commit":
                DB[id] = _row(id, version)
            elif op == "read":
                cache.get(key)
            elif op == "set":
                cache.set(key, _row(id, version), version=version)
            else:
                publish_invalidation(key, version=version, redis=redis_client)
        def drained() -> bool:
            group = redis_client.xinfo_groups(INVALIDATION_STREAM)[0]
            return bool(group["pending"] == 0 and group["lag"] == 0)

        wait_until(drained, 30, "the consumer to read and acknowledge every event", interval=0.02)
        assert consumer.alive
    finally:
        consumer.close()
    assert redis_client.xpending(INVALIDATION_STREAM, CONSUMER_GROUP)["pending"] == 0
    assert consumer.stats["applied"] + consumer.stats["stale"] > 0
    assert _check(cache, redis_client) == []
