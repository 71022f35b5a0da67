"""The hot set of a keyspace: keys whose decayed popularity is above the threshold, plus the pinned keys.

Popularity is kept by the read path (read/access.py) in HOT_SHARDS shards per keyspace (keys.py): ``hot:{S#n}``
holds forward-decayed scores relative to ``hot:{S#n}:epoch``, so a key's decayed read count is score / 2^((now -
epoch) / half_life). One HOTSET script per shard and the pins are read in one pipeline (one round trip; a Redis
Cluster client sends it to each node at once). In each shard both the threshold test (popularity.is_hot's Lua twin:
strictly above a bound computed from Redis's clock, one ZREVRANGEBYSCORE) and the cleanup (one ZRANGEBYSCORE of
the cold members, then ZREM) work on score ranges: the cost grows with the hot set, never with the keyspace. Cold
members (far below the threshold) are dropped here so that a key nobody reads any more leaves the zset instead of
waiting for max_tracked eviction.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from ..redis_layer import script_calls, scripts
from ..redis_layer.keys import HOT_SHARDS, KeyLayout
from ..redis_layer.popularity import half_life_ms
from ..redis_layer.script_calls import HotSet

# Members whose decayed count falls below threshold / COLD_FACTOR are removed by the scan.
COLD_FACTOR = 16.0


def hot_set(client: redis.Redis, layout: KeyLayout, keyspace: str, *, threshold: float,
            half_life: float, cold_below: float | None = None) -> HotSet:
    """The keyspace's hot keys (decayed reads above threshold), hottest first with their decayed read counts, and
    pinned keys; drops cold members on the way (below `cold_below` decayed reads; default threshold /
    COLD_FACTOR: the scan passes the hot threshold's, so a refresh-by-value bound above it drops no more)."""
    cold_factor = COLD_FACTOR if cold_below is None else max(1.0, threshold / cold_below)
    calls = [script_calls.hotset(layout, keyspace=keyspace, shard=shard, threshold=threshold,
                                 half_life_ms=half_life_ms(half_life), cold_factor=cold_factor)
             for shard in range(HOT_SHARDS)]
    def pins(pipe: scripts.Pipeline) -> None:
        pipe.smembers(layout.pinned(keyspace))
    replies = scripts.execute(client, calls, pins)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    shards: list[HotSet] = replies[:HOT_SHARDS]
    pinned = sorted(m.decode("utf-8", "surrogateescape") if isinstance(m, bytes) else str(m) for m in replies[-1])
    reads = {key: count for shard in shards for key, count in shard.reads.items()}
    return HotSet(shards[0].now_ms, sorted(reads, key=reads.__getitem__, reverse=True), pinned, reads)


def pin(client: redis.Redis, layout: KeyLayout, keyspace: str, keys: Iterable[str]) -> int:
    """Pins keys always-warm (scan treats them as hot whatever their reads); returns how many were new."""
    members = list(keys)
    return int(client.sadd(layout.pinned(keyspace), *members)) if members else 0


def unpin(client: redis.Redis, layout: KeyLayout, keyspace: str, keys: Iterable[str]) -> int:
    members = list(keys)
    return int(client.srem(layout.pinned(keyspace), *members)) if members else 0
