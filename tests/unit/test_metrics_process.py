"""Per-process metrics and the Prometheus hooks, each test with a fresh registry."""

from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry

from cachewarm.hooks import Hooks, get_hooks, set_hooks
from cachewarm.metrics.process import ProcessMetrics, PrometheusHooks


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def hooks(registry: CollectorRegistry) -> PrometheusHooks:
    return PrometheusHooks(ProcessMetrics(registry))


def test_refreshes_counted_by_keyspace_and_outcome(registry: CollectorRegistry, hooks: PrometheusHooks) -> None:
    hooks.refresh("product", "ok")
    hooks.refresh("product", "ok")
    hooks.refresh("product", "fenced")
    assert registry.get_sample_value("cachewarm_refreshes_total", {"keyspace": "product", "outcome": "ok"}) == 2
    assert registry.get_sample_value("cachewarm_refreshes_total",
                                     {"keyspace": "product", "outcome": "fenced"}) == 1


def test_source_requests_time_every_request_and_count_errors_by_kind(registry: CollectorRegistry,
                                                                      hooks: PrometheusHooks) -> None:
    hooks.source_request("product", 0.03, "ok")
    hooks.source_request("product", 0.2, "not_found")
    hooks.source_request("product", 5.0, "timeout")
    labels = {"keyspace": "product"}
    assert registry.get_sample_value("cachewarm_source_request_duration_seconds_count", labels) == 3
    assert registry.get_sample_value("cachewarm_source_request_duration_seconds_sum", labels) == pytest.approx(5.23)
    assert registry.get_sample_value("cachewarm_source_request_duration_seconds_bucket",
                                     {**labels, "le": "0.05"}) == 1
    assert registry.get_sample_value("cachewarm_source_errors_total", {**labels, "kind": "timeout"}) == 1
    assert registry.get_sample_value("cachewarm_source_errors_total", {**labels, "kind": "ok"}) is None


def test_invalidations_lag_and_redis_errors(registry: CollectorRegistry, hooks: PrometheusHooks) -> None:
    hooks.invalidation("tag", "applied")
    hooks.invalidation_lag(0.02)
    hooks.invalidation_lag(-0.5)  # a publisher's clock ahead of ours is not a negative lag
    hooks.redis_error("read")
    assert registry.get_sample_value("cachewarm_invalidations_total", {"kind": "tag", "outcome": "applied"}) == 1
    assert registry.get_sample_value("cachewarm_invalidation_lag_seconds_count") == 2
    assert registry.get_sample_value("cachewarm_invalidation_lag_seconds_bucket", {"le": "0.001"}) == 1
    assert registry.get_sample_value("cachewarm_redis_errors_total", {"operation": "read"}) == 1


def test_reads_and_stale_serves_are_left_to_the_cluster_counters(registry: CollectorRegistry,
                                                                  hooks: PrometheusHooks) -> None:
    hooks.stale_served("product")
    names = {metric.name for metric in registry.collect()}
    assert not {"cachewarm_cache_hits", "cachewarm_stale_served"} & names


def test_preset_series_start_at_zero(registry: CollectorRegistry) -> None:
    ProcessMetrics(registry).preset(["product"])
    assert registry.get_sample_value("cachewarm_refreshes_total", {"keyspace": "product", "outcome": "ok"}) == 0
    assert registry.get_sample_value("cachewarm_invalidations_total", {"kind": "key", "outcome": "dead"}) == 0


def test_hooks_route_through_set_hooks(registry: CollectorRegistry, hooks: PrometheusHooks) -> None:
    previous = get_hooks()
    set_hooks(hooks)
    try:
        get_hooks().refresh("product", "ok")
    finally:
        set_hooks(previous)
    assert isinstance(previous, Hooks)
    assert registry.get_sample_value("cachewarm_refreshes_total", {"keyspace": "product", "outcome": "ok"}) == 1


def test_importing_cachewarm_leaves_prometheus_client_unimported() -> None:
    code = ("import sys, cachewarm, cachewarm.metrics, cachewarm.worker.metrics_step; "
            "print('prometheus_client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_register_process_metrics_in_an_application_registry() -> None:
    code = """
from prometheus_client import CollectorRegistry, generate_latest
from cachewarm.hooks import get_hooks
from cachewarm.metrics import register_process_metrics
registry = CollectorRegistry()
register_process_metrics(registry)
register_process_metrics(registry)  # a second call is harmless
get_hooks().source_request("product", 0.01, "connect")
print(registry.get_sample_value("cachewarm_source_errors_total", {"keyspace": "product", "kind": "connect"}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1.0"
