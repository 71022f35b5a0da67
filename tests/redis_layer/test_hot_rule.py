"""One rule of what is hot (`popularity.is_hot`, its Lua twin in lua/preamble.lua): decayed reads strictly above
the threshold, on Redis's clock. The scan's hot set (HOTSET), the invalidation consumer's hand-off (HOT_MEMBERS,
for key events and for the keys a tag walk or a gap answer found) and the ``cachewarm_hot_keys`` gauge (a ZCOUNT
above `hot_bound`) agree on the same members, at the threshold itself too."""

from __future__ import annotations

import redis

from cachewarm.config.keyspaces import KeyspaceRegistry
from cachewarm.invalidation.apply import Hotness, apply_events, hot_keys
from cachewarm.invalidation.events import Event
from cachewarm.metrics.cluster import read_snapshot
from cachewarm.redis_layer.keys import KeyLayout
from cachewarm.redis_layer.popularity import hot_bound, is_hot
from cachewarm.warming.hotkeys import hot_set
from tests.support.hot import seed_hot
from tests.support.redis_cluster import topologies

L = KeyLayout()
THRESHOLD = 4.0
# A half-life so long that a test's milliseconds decay nothing a double can tell: the bound is the threshold itself.
HALF_LIFE = 1e17
SCORES = {"k:at": THRESHOLD, "k:above": THRESHOLD + 1e-9, "k:below": THRESHOLD - 1e-9, "k:far": 100.0,
          "k:one": 1.0, "k:zero": 0.0}
KEYSPACES = KeyspaceRegistry.from_mapping({"k": {"pattern": "k:{id}", "source": "http://127.0.0.1:9/k/{id}",
                                                 "ttl": 60}})


def test_the_python_rule_is_strictly_above_the_decayed_threshold() -> None:
    assert hot_bound(THRESHOLD, 1_000, 1_000, 60) == THRESHOLD
    assert hot_bound(THRESHOLD, 61_000, 1_000, 60) == 2 * THRESHOLD  # one half-life later: twice the score needed
    assert not is_hot(THRESHOLD, THRESHOLD) and is_hot(THRESHOLD + 1e-9, THRESHOLD)
    assert not is_hot(None, 0.0)


@topologies
def test_the_scan_the_consumer_and_the_metrics_agree(redis_client: redis.Redis) -> None:
    sec, usec = redis_client.time()
    now = int(sec) * 1000 + int(usec) // 1000
    seed_hot(redis_client, L, "k", SCORES, now)
    bound = hot_bound(THRESHOLD, now, now, HALF_LIFE)
    expected = {key for key, score in SCORES.items() if is_hot(score, bound)}
    assert expected == {"k:above", "k:far"}

    gauge = read_snapshot(redis_client, L, ["k"], hot_half_life=HALF_LIFE, hot_threshold=THRESHOLD).hot_keys["k"]
    handed = apply_events(redis_client, [Event(f"1-{i}", "key", key) for i, key in enumerate(SCORES)], layout=L,
                          fence_ttl=60, hotness=Hotness(KEYSPACES, HALF_LIFE, THRESHOLD)).hot
    found = hot_keys(redis_client, list(SCORES), keyspaces=KEYSPACES, layout=L, half_life=HALF_LIFE,
                     threshold=THRESHOLD)
    scanned = hot_set(redis_client, L, "k", threshold=THRESHOLD, half_life=HALF_LIFE).hot
    assert set(handed) == set(found) == set(scanned) == expected
    assert gauge == len(expected)


@topologies
def test_a_pinned_key_is_handed_over_whatever_its_reads(redis_client: redis.Redis) -> None:
    redis_client.sadd(L.pinned("k"), "k:zero")
    assert hot_keys(redis_client, ["k:zero", "k:none"], keyspaces=KEYSPACES, layout=L, half_life=60,
                    threshold=THRESHOLD) == ["k:zero"]
