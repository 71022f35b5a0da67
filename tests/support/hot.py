"""Seeding and reading a keyspace's sharded hot set (keys.py: ``hot:{S#n}``, n = shard_of(key)) in tests."""

from __future__ import annotations

from typing import Any

from cachewarm.redis_layer.keys import HOT_SHARDS, KeyLayout, shard_of


def seed_hot(client: Any, layout: KeyLayout, keyspace: str, scores: dict[str, float], epoch_ms: int) -> None:
    """Gives each key its score in its shard, every shard the same epoch."""
    for shard in range(HOT_SHARDS):
        client.set(layout.hot_epoch(keyspace, shard), epoch_ms)
    for key, score in scores.items():
        client.zadd(layout.hot(keyspace, shard_of(key)), {key: score})


def hot_score(client: Any, layout: KeyLayout, keyspace: str, key: str) -> float | None:
    score = client.zscore(layout.hot(keyspace, shard_of(key)), key)
    return None if score is None else float(score)


def hot_members(client: Any, layout: KeyLayout, keyspace: str) -> dict[str, float]:
    """Every shard's members with their scores."""
    out: dict[str, float] = {}
    for shard in range(HOT_SHARDS):
        for member, score in client.zrange(layout.hot(keyspace, shard), 0, -1, withscores=True):
            out[member.decode()] = float(score)
    return out
