"""Scenario 6: stream retention gap. The consumer group is offline while MAXLEN trimming drops events it never
read. On its return the gap must be detected (the group's last-delivered id is older than the stream's first
entry) and answered safely: no key that a lost event could have named may keep serving the old value.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from cachewarm import Cache, Settings
from cachewarm.demo.source import SourceServer
from cachewarm.invalidation.consumer import InvalidationConsumer
from cachewarm.invalidation.publish import publish_invalidation
from cachewarm.redis_layer.keys import INVALIDATION_STREAM, KeyLayout
from tests.support.redis_cluster import topologies
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60), pytest.mark.source(latency=0.05), topologies]


def test_events_lost_to_trimming_are_detected_and_their_keys_not_served_stale(
        redis_url: str, redis_client: redis.Redis, source: SourceServer,
        write_config: Callable[[str], Path], topology: str) -> None:
    config = write_config(f"""
        [keyspaces.product]
        pattern = "product:{{id}}"
        source = "{source.url}/products/{{id}}"
        ttl = 300
        version_field = "version"
    """)
    settings = Settings.load(redis_url=redis_url, config=config, redis_cluster=topology == "cluster")
    keys = [f"product:{i}" for i in range(20)]
    consumer = InvalidationConsumer(settings, block_ms=10)
    consumer.poll(block_ms=10)  # the group exists and has read everything so far
    with Cache(settings=settings) as cache:
        assert all(cache.get(k)["version"] == 1 for k in keys)
        # While the consumer is away: the items change, the writer publishes, retention drops the events.
        for i in range(10):
            source.bump(i)
            publish_invalidation(keys[i], version=2, redis=redis_client)
        redis_client.xtrim(INVALIDATION_STREAM, maxlen=0, approximate=False)
        publish_invalidation("product:19", redis=redis_client)  # later traffic: the stream is not empty
        groups: Any = redis_client.xinfo_groups(INVALIDATION_STREAM)
        first: Any = redis_client.xinfo_stream(INVALIDATION_STREAM)["first-entry"][0]
        assert groups[0]["last-delivered-id"] < first  # the gap the consumer must notice
        try:
            _drain(consumer)
        finally:
            consumer.close()
        served = {k: cache.get(k)["version"] for k in keys[:10]}
    assert served == dict.fromkeys(keys[:10], 2), f"values whose invalidations were lost: {served}"


# ---- what is and is not a gap ----------------------------------------------------------------------------------

def _settings(make_settings: Callable[..., Settings], write_config: Callable[[str], Path],
              **overrides: Any) -> Settings:
    config = write_config("""
        [keyspaces.product]
        pattern = "product:{id}"
        source = "http://127.0.0.1:9/products/{id}"
        ttl = 300
    """)
    return make_settings(config, **overrides)


def _drain(consumer: InvalidationConsumer) -> None:
    wait_until(lambda: not consumer.poll(block_ms=10), 10, "the consumer to read the stream to its end")


def _gaps(client: redis.Redis) -> int:
    return int(client.hget(KeyLayout().refresh_stats, "invalidation_gaps") or 0)


def test_no_gap_for_a_new_group_an_untrimmed_stream_or_trimmed_entries_already_read(
        make_settings: Callable[..., Settings], redis_client: redis.Redis,
        write_config: Callable[[str], Path]) -> None:
    settings = _settings(make_settings, write_config)
    with Cache(settings=settings) as cache, InvalidationConsumer(settings, name="c1", block_ms=10) as consumer:
        cache.set("product:99", {"id": 99})
        for i in range(5):  # published before any worker ever ran: the group, created now, reads them all
            publish_invalidation(f"product:{i}", redis=redis_client)
        _drain(consumer)
        for i in range(10):
            publish_invalidation(f"product:{i}", redis=redis_client)
        _drain(consumer)
        redis_client.xtrim(INVALIDATION_STREAM, maxlen=0, approximate=False)  # all read and applied: no loss
        publish_invalidation("product:1", redis=redis_client)
        _drain(consumer)
        assert consumer.stats["applied"] == 16
        assert consumer.stats["gaps"] == 0 and _gaps(redis_client) == 0
        assert cache.exists("product:99")


def test_a_group_created_after_the_stream_was_trimmed_answers_the_gap(
        make_settings: Callable[..., Settings], redis_client: redis.Redis,
        write_config: Callable[[str], Path]) -> None:
    settings = _settings(make_settings, write_config)
    with Cache(settings=settings) as cache:
        cache.set("product:99", {"id": 99}, tags=["products"])
        for i in range(3):
            publish_invalidation(f"product:{i}", redis=redis_client)
        redis_client.xtrim(INVALIDATION_STREAM, maxlen=1, approximate=False)
        with InvalidationConsumer(settings, name="c1", block_ms=10) as consumer:
            _drain(consumer)
            assert consumer.stats["gaps"] == 1 and consumer.stats["applied"] == 1
        assert not cache.exists("product:99")
        assert int(redis_client.hget(KeyLayout().fence("product:99"), "g") or 0) >= 2  # set, then the gap's drop
        assert _gaps(redis_client) == 1


def test_a_stream_trimmed_empty_is_a_gap_answered_once(
        make_settings: Callable[..., Settings], redis_client: redis.Redis,
        write_config: Callable[[str], Path]) -> None:
    settings = _settings(make_settings, write_config)
    with Cache(settings=settings) as cache, InvalidationConsumer(settings, name="c1", block_ms=10) as consumer:
        _drain(consumer)
        cache.set("product:99", {"id": 99})
        for i in range(3):
            publish_invalidation(f"product:{i}", redis=redis_client)
        redis_client.xtrim(INVALIDATION_STREAM, maxlen=0, approximate=False)  # nothing left to read
        _drain(consumer)
        assert consumer.stats["gaps"] == 1
        assert not cache.exists("product:99")
        cache.set("product:99", {"id": 99})
        for _ in range(3):
            consumer.poll(block_ms=10)
        assert consumer.stats["gaps"] == 1 and _gaps(redis_client) == 1  # answered once, not at every poll
        assert cache.exists("product:99")


@pytest.mark.parametrize("who", ["same consumer re-reading its pending", "another consumer claiming"])
def test_entries_trimmed_while_pending_are_a_gap(
        who: str, make_settings: Callable[..., Settings], redis_client: redis.Redis,
        write_config: Callable[[str], Path]) -> None:
    settings = _settings(make_settings, write_config, claim_idle_ms=1)
    with Cache(settings=settings) as cache:
        with InvalidationConsumer(settings, name="c1", block_ms=10) as consumer:
            _drain(consumer)
        cache.set("product:99", {"id": 99})
        publish_invalidation("product:5", redis=redis_client)
        # delivered to c1, which dies before applying it; then retention drops it
        redis_client.xreadgroup("cachewarm-workers", "c1", {INVALIDATION_STREAM: ">"})
        redis_client.xtrim(INVALIDATION_STREAM, maxlen=0, approximate=False)
        name = "c1" if who.startswith("same") else "c2"
        time.sleep(0.01)
        with InvalidationConsumer(settings, name=name, block_ms=10, claim_interval=0) as consumer:
            _drain(consumer)
            assert consumer.stats["gaps"] == 1
        assert not cache.exists("product:99")
        assert redis_client.xpending(INVALIDATION_STREAM, "cachewarm-workers")["pending"] == 0


def test_a_gap_left_half_answered_by_a_killed_consumer_is_taken_over(
        make_settings: Callable[..., Settings], redis_client: redis.Redis,
        write_config: Callable[[str], Path]) -> None:
    settings = _settings(make_settings, write_config, claim_idle_ms=50)
    with Cache(settings=settings) as cache:
        cache.set("product:99", {"id": 99})
        with InvalidationConsumer(settings, name="c1", block_ms=10) as consumer:
            _drain(consumer)
            for i in range(3):
                publish_invalidation(f"product:{i}", redis=redis_client)
            redis_client.xtrim(INVALIDATION_STREAM, maxlen=0, approximate=False)
            publish_invalidation("product:7", redis=redis_client)  # read past the hole with the check
            # the consumer that found the gap was killed before dropping anything: only the record is left
            consumer.answer_gap = lambda gap: 0  # type: ignore[method-assign]
            consumer.poll(block_ms=10)
            assert consumer.stats["applied"] == 1
        assert cache.exists("product:99") and redis_client.hget(KeyLayout().invalidation_gap(), "pending")
        time.sleep(0.06)
        with InvalidationConsumer(settings, name="c2", block_ms=10, claim_interval=0) as survivor:
            _drain(survivor)
            assert survivor.stats["gaps"] == 1
        assert not cache.exists("product:99")
        assert redis_client.hget(KeyLayout().invalidation_gap(), "pending") is None


def test_a_stream_removed_under_a_running_consumer_is_a_gap(
        make_settings: Callable[..., Settings], redis_client: redis.Redis,
        write_config: Callable[[str], Path]) -> None:
    settings = _settings(make_settings, write_config)
    with Cache(settings=settings) as cache, InvalidationConsumer(settings, name="c1", block_ms=10) as consumer:
        publish_invalidation("product:1", redis=redis_client)
        _drain(consumer)
        cache.set("product:99", {"id": 99})
        publish_invalidation("product:2", redis=redis_client)
        redis_client.delete(INVALIDATION_STREAM)  # with the group and whatever it had not read
        consumer.start()
        wait_until(lambda: consumer.stats["gaps"], 10, "the consumer to notice the gap", interval=0.02)
        assert consumer.stats["gaps"] == 1
        assert not cache.exists("product:99")
