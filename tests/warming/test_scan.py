"""The scan: due hot/pinned keys are claimed once, fresh or cold ones are left alone, gauges are written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import redis.cluster

from cachewarm import Settings
from cachewarm.redis_layer import envelope
from cachewarm.redis_layer.keys import KeyLayout
from cachewarm.warming.scan import scan
from tests.support.hot import seed_hot
from tests.support.redis_cluster import topologies

L = KeyLayout()
# On a cluster the due test and the claims are one call per node for keys of many slots (warming/claims.py)
pytestmark = topologies


@pytest.fixture
def settings(write_config: Callable[[str], Path], make_settings: Callable[..., Settings]) -> Settings:
    config = write_config("""
        [keyspaces.product]
        pattern = "product:{id}"
        source = "http://127.0.0.1:9/products/{id}"
        ttl = 60
        refresh_ahead = 10

        [keyspaces.user]
        pattern = "user:{id}"
        source = "http://127.0.0.1:9/users/{id}"
        ttl = 60
        refresh_ahead = 10
    """)
    return make_settings(config, hot_threshold=2.0, hot_half_life=60.0)


def _now(client: redis.Redis) -> int:
    sec, usec = client.time()
    return int(sec) * 1000 + int(usec) // 1000


def _hot(client: redis.Redis, keyspace: str, scores: dict[str, float]) -> None:
    seed_hot(client, L, keyspace, scores, _now(client))


def _store(client: redis.Redis, key: str, remaining_ms: int) -> None:
    """A value whose freshness ends remaining_ms from now (negative: already expired)."""
    now = _now(client)
    raw = envelope.encode('{"x":1}', fetched_ms=now - 60_000 + remaining_ms, ttl_ms=60_000)
    client.set(L.value(key), raw, px=max(remaining_ms, 0) + 60_000)


def _reset_stats(client: redis.Redis) -> None:
    if isinstance(client, redis.cluster.RedisCluster):
        client.config_resetstat(target_nodes=redis.cluster.RedisCluster.PRIMARIES)
    else:
        client.config_resetstat()


def _calls(client: redis.Redis, command: str) -> int:
    """Calls of a command since CONFIG RESETSTAT (on every master of a cluster)."""
    name = f"cmdstat_{command}"
    if isinstance(client, redis.cluster.RedisCluster):
        per_node = client.info("commandstats", target_nodes=redis.cluster.RedisCluster.PRIMARIES)
        return sum(int(info.get(name, {}).get("calls", 0)) for info in per_node.values())
    return int(client.info("commandstats").get(name, {}).get("calls", 0))


def _keys(batches: list[list[str]]) -> list[str]:
    return sorted(k for batch in batches for k in batch)


def test_due_hot_keys_are_found_and_fresh_or_cold_ones_are_not(settings: Settings,
                                                              redis_client: redis.Redis) -> None:
    _hot(redis_client, "product", {"product:missing": 10, "product:soon": 10, "product:fresh": 10,
                                   "product:cold": 0.5})
    _store(redis_client, "product:soon", 5_000)       # less than refresh_ahead (10 s) left
    _store(redis_client, "product:fresh", 40_000)
    _store(redis_client, "product:cold", -1_000)      # expired, but nobody reads it
    result = scan(redis_client, settings)
    assert result.ran
    assert _keys(result.batches) == ["product:missing", "product:soon"]
    assert result.keyspaces["product"].hot_keys == 3
    assert result.keyspaces["product"].due == 2


def test_a_claimed_key_is_enqueued_once_across_scans(settings: Settings, redis_client: redis.Redis) -> None:
    _hot(redis_client, "product", {"product:1": 10})
    first = scan(redis_client, settings)
    second = scan(redis_client, settings)
    assert _keys(first.batches) == ["product:1"]
    assert second.ran and second.batches == []
    # The refresh releases the claim when done; a key still due is then enqueued again.
    redis_client.delete(L.claim("product:1"))
    assert _keys(scan(redis_client, settings).batches) == ["product:1"]


def test_a_concurrent_scan_does_nothing(settings: Settings, redis_client: redis.Redis) -> None:
    _hot(redis_client, "product", {"product:1": 10})
    redis_client.set(L.scan_lock, "someone-else", px=10_000)
    result = scan(redis_client, settings)
    assert not result.ran and result.batches == []
    assert redis_client.get(L.scan_lock) == b"someone-else"
    assert not redis_client.exists(L.claim("product:1"))


def test_pinned_keys_are_due_without_reads_and_batches_are_per_keyspace(settings: Settings,
                                                                        redis_client: redis.Redis) -> None:
    redis_client.sadd(L.pinned("product"), *[f"product:{i}" for i in range(5)])
    redis_client.sadd(L.pinned("user"), "user:1")
    result = scan(redis_client, settings, batch_size=2)
    assert [len(b) for b in result.batches] == [2, 2, 1, 1]
    for batch in result.batches:
        assert len({k.split(":")[0] for k in batch}) == 1
    assert _keys(result.batches) == sorted([f"product:{i}" for i in range(5)] + ["user:1"])


def test_gauges_in_refresh_stats(settings: Settings, redis_client: redis.Redis) -> None:
    _hot(redis_client, "product", {"product:late": 10, "product:fresh": 10})
    _store(redis_client, "product:late", -3_000)       # its refresh time was 13 s ago
    _store(redis_client, "product:fresh", 50_000)
    scan(redis_client, settings)
    stats = {k.decode(): float(v) for k, v in redis_client.hgetall(L.refresh_stats).items()}
    assert stats["hot_keys:product"] == 2
    assert stats["backlog_keys:product"] == 1
    assert 12.5 <= stats["backlog_seconds:product"] <= 20
    assert stats["hot_keys:user"] == 0


def test_due_keys_already_claimed_are_counted_not_claimed_again(settings: Settings,
                                                                redis_client: redis.Redis) -> None:
    """A due key whose claim is held (its batch queued or running) is left out of the claims (no SET NX tried) but
    counted in the backlog gauges."""
    _hot(redis_client, "product", {"product:held": 10, "product:late": 10, "product:fresh": 10})
    _store(redis_client, "product:held", -8_000)       # its refresh time was 18 s ago: the most overdue
    _store(redis_client, "product:late", -3_000)
    _store(redis_client, "product:fresh", 50_000)
    redis_client.set(L.claim("product:held"), "1", px=60_000)
    _reset_stats(redis_client)
    result = scan(redis_client, settings)
    assert _keys(result.batches) == ["product:late"]
    assert _calls(redis_client, "set") == 2  # the scan lock and product:late's claim
    assert result.keyspaces["product"].due == 2
    stats = {k.decode(): float(v) for k, v in redis_client.hgetall(L.refresh_stats).items()}
    assert stats["backlog_keys:product"] == 2
    assert 17.5 <= stats["backlog_seconds:product"] <= 25


def test_cost_follows_the_hot_set_not_the_keyspace(settings: Settings, redis_client: redis.Redis) -> None:
    pipe = redis_client.pipeline()
    for i in range(2000):
        _ = pipe.set(L.value(f"product:{i}"), envelope.encode('{"x":1}', fetched_ms=0, ttl_ms=1))
    pipe.execute()
    _hot(redis_client, "product", {"product:7": 10})
    _reset_stats(redis_client)
    result = scan(redis_client, settings)
    assert _keys(result.batches) == ["product:7"]
    assert _calls(redis_client, "scan") == 0 and _calls(redis_client, "keys") == 0
    assert _calls(redis_client, "getrange") == 1


def test_a_capped_scan_claims_the_most_overdue_first_among_equally_read(settings: Settings,
                                                                        redis_client: redis.Redis) -> None:
    _hot(redis_client, "product", {f"product:{i}": 10 for i in range(4)})
    _store(redis_client, "product:0", 9_000)      # due in the least
    _store(redis_client, "product:1", -5_000)     # the most overdue of those with a value
    _store(redis_client, "product:2", 1_000)
    # product:3 is missing: first of all
    result = scan(redis_client, settings, max_keys=2)
    assert _keys(result.batches) == ["product:1", "product:3"]
    assert result.keyspaces["product"].due == 4          # the gauge still counts every due key
    assert not redis_client.exists(L.claim("product:0"))  # left for a later scan, unclaimed
    assert _keys(scan(redis_client, settings, max_keys=0).batches) == []


def test_a_capped_scan_claims_the_most_read_keys_first(settings: Settings, redis_client: redis.Redis) -> None:
    """When the queue has room for fewer keys than are due, the room goes to the keys read most (their next
    read is the soonest), whatever how overdue the others are; a pinned key that is not hot counts as the
    hottest."""
    _hot(redis_client, "product", {"product:rare": 3, "product:often": 50, "product:mid": 20})
    _store(redis_client, "product:rare", -30_000)    # the most overdue, the least read
    _store(redis_client, "product:often", 5_000)
    _store(redis_client, "product:mid", 2_000)
    redis_client.sadd(L.pinned("product"), "product:pinned")  # missing, not read at all
    assert _keys(scan(redis_client, settings, max_keys=1).batches) == ["product:pinned"]
    assert _keys(scan(redis_client, settings, max_keys=1).batches) == ["product:often"]
    assert _keys(scan(redis_client, settings, max_keys=1).batches) == ["product:mid"]
    assert _keys(scan(redis_client, settings, max_keys=1).batches) == ["product:rare"]
    result = scan(redis_client, settings)
    assert result.batches == []                      # each claimed once
