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
from cachewarm.keys import INVALIDATION_STREAM

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]


@pytest.mark.xfail(strict=True, reason="missing: the invalidation consumer does not detect a retention gap "
                                       "(last-delivered id older than the stream's first entry) and keeps "
                                       "serving values whose invalidations were trimmed away")
def test_events_lost_to_trimming_are_detected_and_their_keys_not_served_stale(
        redis_url: str, redis_client: redis.Redis, source: SourceServer,
        keyspace_file: Callable[[str], Path]) -> None:
    config = keyspace_file(f"""
        [keyspaces.product]
        pattern = "product:{{id}}"
        source = "{source.url}/products/{{id}}"
        ttl = 300
        version_field = "version"
    """)
    settings = Settings.load(redis_url=redis_url, config=config)
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
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and consumer.poll(block_ms=10):
                pass
        finally:
            consumer.close()
        served = {k: cache.get(k)["version"] for k in keys[:10]}
    assert served == dict.fromkeys(keys[:10], 2), f"values whose invalidations were lost: {served}"
