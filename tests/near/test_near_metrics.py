"""The near cache's figures reach Prometheus (read at scrape time from this process's near caches)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from cachewarm.metrics.near import NearCacheCollector

KEYSPACE = """
[keyspaces.near]
pattern = "near:{id}"
source = "python:tests.support.near_load:load"
ttl = 600
local = true
local_max_entries = 2
"""


def test_figures_are_exported_per_keyspace(write_config, make_cache, redis_client) -> None:
    cache = make_cache(write_config(KEYSPACE))
    registry = CollectorRegistry()
    registry.register(NearCacheCollector())
    for i in range(3):
        cache.set(f"near:{i}", {"version": i})
    for i in range(3):  # Redis hits: copies kept (the third evicts the first: room for two)
        cache.get(f"near:{i}")
    cache.get("near:2")  # served locally
    redis_client.set(cache.layout.value("near:2"), b"changed")  # a push for a key this process holds
    cache.get("near:0")

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    figures = cache.near_figures()["near"]
    assert sample("cachewarm_local_hits_total", keyspace="near") == figures["hits"] >= 1
    assert sample("cachewarm_local_misses_total", keyspace="near") == figures["misses"] >= 3
    assert sample("cachewarm_local_evictions_total", keyspace="near") >= 1   # three keys, room for two
    assert sample("cachewarm_local_entries", keyspace="near") == figures["entries"] <= 2
    assert sample("cachewarm_local_bytes", keyspace="near") == figures["bytes"] > 0
    assert sample("cachewarm_local_invalidations_total") >= 1
    assert sample("cachewarm_local_links_healthy") == 1
    cache.close()
    assert sample("cachewarm_local_entries", keyspace="near") is None     # a closed cache is not counted


def test_local_hits_are_counted_cluster_wide(write_config, make_cache, redis_client) -> None:
    """Local hits reach the stats hash (hits all the same, and local_hit:S), so `cachewarm status` and the workers'
    endpoint show them."""
    cache = make_cache(write_config(KEYSPACE))
    cache.set("near:1", {"version": 1})
    cache.get("near:1")          # a Redis hit: the copy kept
    for _ in range(5):
        cache.get("near:1")      # local hits
    assert cache.flush_stats()
    stats = {k.decode(): float(v) for k, v in redis_client.hgetall(cache.layout.stats).items()}
    assert stats["local_hit:near"] == 5
    assert stats["hit:near"] == 6
