"""The cluster collector against a real redis-server, counting reads made by real `Cache` objects."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest

from cachewarm import Cache, Settings
from cachewarm.demo.redis_server import free_port
from cachewarm.hooks import get_hooks, set_hooks
from cachewarm.metrics.cluster import ClusterCollector
from cachewarm.metrics.process import ProcessMetrics, PrometheusHooks
from cachewarm.redis_layer.keys import CONSUMER_GROUP, DEAD_LETTER_STREAM, INVALIDATION_STREAM, KeyLayout
from tests.support.redis_cluster import topologies

CONFIG = """
[keyspaces.product]
pattern = "product:{id}"
source = "python:tests.metrics.test_metrics_cluster:product"
ttl = 60
refresh_ahead = 15

[keyspaces.user]
pattern = "user:{id}"
source = "python:tests.metrics.test_metrics_cluster:product"
ttl = 60
"""


def product(id: str) -> dict[str, Any] | None:
    return None if id == "missing" else {"id": id}


@pytest.fixture
def config(write_config: Callable[[str], Path]) -> Path:
    return write_config(CONFIG)


def collect(settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ClusterCollector.from_settings(settings))
    return registry


@topologies
def test_reads_of_every_cache_are_counted_cluster_wide(config: Path, make_cache: Callable[..., Cache],
                                                       make_settings: Callable[..., Settings]) -> None:
    first, second = make_cache(config), make_cache(config)
    for key in ("product:1", "product:2", "product:1", "product:1"):
        first.get(key)
    second.get("product:2")
    second.get("user:7")
    assert first.flush_stats() and second.flush_stats()

    registry = collect(make_settings(config))
    value = registry.get_sample_value
    assert value("cachewarm_cache_hits_total", {"keyspace": "product"}) == 3
    assert value("cachewarm_cache_misses_total", {"keyspace": "product"}) == 2
    assert value("cachewarm_cache_hits_total", {"keyspace": "user"}) == 0
    assert value("cachewarm_cache_misses_total", {"keyspace": "user"}) == 1
    # Served age is a histogram of the hits: cumulative buckets ending in +Inf = the hit count.
    assert value("cachewarm_served_value_age_seconds_count", {"keyspace": "product"}) == 3
    assert value("cachewarm_served_value_age_seconds_bucket", {"keyspace": "product", "le": "+Inf"}) == 3
    assert value("cachewarm_served_value_age_seconds_bucket", {"keyspace": "product", "le": "60.0"}) == 3
    assert value("cachewarm_stale_served_total", {"keyspace": "product"}) == 0


def test_age_buckets_are_cumulative(config: Path, make_settings: Callable[..., Settings],
                                    redis_client: redis.Redis) -> None:
    stats = KeyLayout().stats
    redis_client.hset(stats, mapping={"age:product:0": 2, "age:product:4": 3, "age:product:11": 1,
                                      "agesum:product": 4000.5, "hit:product": 6})
    value = collect(make_settings(config)).get_sample_value
    labels = {"keyspace": "product"}
    assert value("cachewarm_served_value_age_seconds_bucket", {**labels, "le": "0.1"}) == 2
    assert value("cachewarm_served_value_age_seconds_bucket", {**labels, "le": "2.5"}) == 2
    assert value("cachewarm_served_value_age_seconds_bucket", {**labels, "le": "5.0"}) == 5
    assert value("cachewarm_served_value_age_seconds_bucket", {**labels, "le": "3600.0"}) == 5
    assert value("cachewarm_served_value_age_seconds_bucket", {**labels, "le": "+Inf"}) == 6
    assert value("cachewarm_served_value_age_seconds_sum", labels) == 4000.5


@topologies
def test_worker_figures_streams_and_heartbeats(config: Path, make_settings: Callable[..., Settings],
                                               redis_client: redis.Redis) -> None:
    layout = KeyLayout()
    redis_client.hset(layout.refresh_stats, mapping={
        "late:product": 4, "wasted:product": 2, "hot_keys:product": 120, "backlog_keys:product": 7,
        "backlog_seconds:product": 1.5, "late:not-configured": 99, "left_out:product": 30,
        "left_out_keys:product": 6})
    for i in range(3):
        redis_client.xadd(INVALIDATION_STREAM, {"key": f"product:{i}"})
    redis_client.xgroup_create(INVALIDATION_STREAM, CONSUMER_GROUP, id="0")
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INVALIDATION_STREAM: ">"}, count=2)
    redis_client.xadd(DEAD_LETTER_STREAM, {"reason": "no key or tag"})
    redis_client.set(layout.worker("host.1"), "1", px=5000)
    redis_client.set(layout.worker("host.2"), "2", px=5000)

    registry = collect(make_settings(config))
    value = registry.get_sample_value
    product = {"keyspace": "product"}
    assert value("cachewarm_refresh_late_total", product) == 4
    assert value("cachewarm_refresh_wasted_total", product) == 2
    assert value("cachewarm_hot_keys", product) == 120
    assert value("cachewarm_refresh_backlog_keys", product) == 7
    assert value("cachewarm_refresh_backlog_seconds", product) == 1.5
    assert value("cachewarm_refresh_left_out_total", product) == 30  # the refresh budget's (issue 27)
    assert value("cachewarm_refresh_left_out_keys", product) == 6
    assert value("cachewarm_invalidation_pending") == 2
    assert value("cachewarm_invalidation_dead_letters") == 1
    assert value("cachewarm_workers") == 2
    assert b"not-configured" not in generate_latest(registry)


@topologies
def test_hot_keys_counted_from_popularity_when_workers_wrote_none(
        config: Path, make_cache: Callable[..., Cache], make_settings: Callable[..., Settings]) -> None:
    cache = make_cache(config, hot_threshold=2.5)
    for _ in range(5):
        cache.get("product:hot")
    cache.get("product:cold")
    assert cache.flush_stats()
    value = collect(make_settings(config, hot_threshold=2.5)).get_sample_value
    assert value("cachewarm_hot_keys", {"keyspace": "product"}) == 1
    assert value("cachewarm_hot_keys", {"keyspace": "user"}) == 0


@topologies
def test_empty_redis_exports_zeros(config: Path, make_settings: Callable[..., Settings]) -> None:
    value = collect(make_settings(config)).get_sample_value
    assert value("cachewarm_invalidation_pending") == 0
    assert value("cachewarm_invalidation_dead_letters") == 0
    assert value("cachewarm_workers") == 0
    assert value("cachewarm_cache_hits_total", {"keyspace": "product"}) == 0


def test_redis_down_the_scrape_answers_and_counts_the_error(config: Path) -> None:
    settings = Settings.load(redis_url=f"redis://:secret@127.0.0.1:{free_port()}/0", config=config)
    registry = collect(settings)
    metrics = ProcessMetrics(registry)
    previous = get_hooks()
    set_hooks(PrometheusHooks(metrics))
    try:
        text = generate_latest(registry).decode()
    finally:
        set_hooks(previous)
    assert "cachewarm_cache_hits_total" not in text
    assert registry.get_sample_value("cachewarm_redis_errors_total", {"operation": "scrape"}) == 1
    assert "secret" not in text
