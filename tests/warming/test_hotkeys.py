"""Hot set: decayed popularity above the threshold, pinned keys, cleanup of cold members."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from cachewarm import Cache
from cachewarm.redis_layer.keys import KeyLayout, shard_of
from cachewarm.warming.hotkeys import COLD_FACTOR, hot_set, pin, unpin
from tests.support.hot import hot_members, hot_score, seed_hot

L = KeyLayout()


def test_reads_through_the_cache_make_a_key_hot(make_cache: Callable[..., Cache], write_config: Callable[[str],
                                                Path], redis_client: redis.Redis) -> None:
    config = write_config("""
        [keyspaces.num]
        pattern = "num:{n}"
        source = "python:tests.warming.test_hotkeys:identity"
        ttl = 60
    """)
    cache = make_cache(config, hot_threshold=3.0)
    for _ in range(10):
        cache.get("num:1")
    cache.get("num:2")
    cache.flush_stats()
    hs = hot_set(redis_client, L, "num", threshold=3.0, half_life=60)
    assert hs.hot == ["num:1"]
    assert hs.pinned == []


def identity(n: str) -> dict[str, str]:
    return {"n": n}


def _seed(client: redis.Redis, keyspace: str, scores: dict[str, float], epoch_ms: int) -> None:
    seed_hot(client, L, keyspace, scores, epoch_ms)


def test_threshold_uses_decay_relative_to_the_epoch(redis_client: redis.Redis) -> None:
    now = int(redis_client.time()[0]) * 1000
    # Epoch two half-lives ago: a stored score of 8 is worth 2 reads now, 40 is worth 10.
    _seed(redis_client, "s", {"a": 8.0, "b": 40.0}, now - 2 * 10_000)
    hs = hot_set(redis_client, L, "s", threshold=5.0, half_life=10)
    assert hs.hot == ["b"]
    assert set(hot_members(redis_client, L, "s")) == {"a", "b"}


def test_hot_keys_come_hottest_first_with_their_decayed_reads(redis_client: redis.Redis) -> None:
    sec, usec = redis_client.time()
    now = int(sec) * 1000 + int(usec) // 1000
    # Epoch two half-lives ago: stored scores are worth a quarter of themselves in reads now.
    scores = {f"k{i}": 4.0 * (i % 7 + 2) for i in range(40)}  # over several shards; 2 to 8 reads now
    _seed(redis_client, "s", {**scores, "cold": 2.0}, now - 2 * 10_000)
    hs = hot_set(redis_client, L, "s", threshold=1.0, half_life=10)
    assert "cold" not in hs.hot
    assert sorted(hs.hot) == sorted(scores)
    counts = [hs.reads[key] for key in hs.hot]
    assert counts == sorted(counts, reverse=True)
    for key, score in scores.items():
        assert hs.reads[key] == pytest.approx(score / 4, rel=0.02)


def test_cold_members_are_removed_with_their_seen_field(redis_client: redis.Redis) -> None:
    now = int(redis_client.time()[0]) * 1000
    _seed(redis_client, "s", {"cold": 1.0, "warm": 100.0}, now)
    for key, score in {"cold": "1", "warm": "100"}.items():
        redis_client.hset(L.seen("s", shard_of(key)), key, score)
    hs = hot_set(redis_client, L, "s", threshold=COLD_FACTOR * 1.5, half_life=60)
    assert hs.hot == ["warm"]
    assert hot_score(redis_client, L, "s", "cold") is None
    assert redis_client.hexists(L.seen("s", shard_of("cold")), "cold") is False
    assert redis_client.hexists(L.seen("s", shard_of("warm")), "warm") is True


def test_pinned_keys_are_part_of_the_set_once(redis_client: redis.Redis) -> None:
    now = int(redis_client.time()[0]) * 1000
    _seed(redis_client, "s", {"a": 100.0}, now)
    assert pin(redis_client, L, "s", ["a", "p"]) == 2
    hs = hot_set(redis_client, L, "s", threshold=1.0, half_life=60)
    assert sorted(hs.keys()) == ["a", "p"]
    assert len(hs.keys()) == 2
    unpin(redis_client, L, "s", ["p"])
    assert hot_set(redis_client, L, "s", threshold=1.0, half_life=60).pinned == ["a"]


def test_empty_keyspace(redis_client: redis.Redis) -> None:
    hs = hot_set(redis_client, L, "nothing", threshold=1.0, half_life=60)
    assert hs.keys() == []
    assert hs.now_ms > 0
