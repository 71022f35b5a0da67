"""The invalidation consumer through a master's failover (issue 10 item 4): events naming keys of the dead master's
slots cannot be applied until its replica is promoted. They must be applied then, promptly: not left pending until
another consumer's XAUTOCLAIM (``claim_idle_ms``, set out of reach here), and not dead-lettered as poison because
the consumer's own retries counted as deliveries."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from cachewarm import Settings, publish_invalidation
from cachewarm.invalidation.consumer import InvalidationConsumer
from cachewarm.redis_layer.keys import CONSUMER_GROUP, INVALIDATION_STREAM, KeyLayout
from tests.support.redis_cluster import RedisCluster

pytestmark = pytest.mark.timeout(120)

LAYOUT = KeyLayout("cachewarm:")  # Settings.key_prefix's default
CONFIG = """
[keyspaces.item]
pattern = "item:{id}"
source = "python:tests.support.sources_fixture:counted"
ttl = 60
version_field = "version"
"""


def test_events_of_a_dead_masters_slots_are_applied_once_its_replica_is_promoted(
        write_config: Callable[[str], Path]) -> None:
    # a failover slower than the consumer's back-off (0.1 s doubling to 5 s) takes: as in production (15 s default)
    with RedisCluster(node_timeout_ms=4000) as cluster:
        settings = Settings.load(redis_url=cluster.url, redis_cluster=True, config=write_config(CONFIG),
                                 claim_idle_ms=600_000)
        client: Any = cluster.client(socket_timeout=5)
        owner = {node.port: node for node in cluster.nodes}
        stream_port = client.nodes_manager.get_node_from_slot(client.keyslot(INVALIDATION_STREAM)).port
        victim_port = next(n.port for n in client.get_primaries() if n.port != stream_port)
        keys = [k for k in (f"item:{i}" for i in range(300))
                if client.nodes_manager.get_node_from_slot(client.keyslot(LAYOUT.fence(k))).port == victim_port][:20]
        consumer = InvalidationConsumer(settings, block_ms=50)
        consumer.ensure_group()
        consumer.start()
        try:
            victim = owner[victim_port].process
            assert victim is not None
            os.kill(victim.pid, signal.SIGKILL)
            for key in keys:
                publish_invalidation(key, version=3, redis=client, settings=settings)
            deadline = time.monotonic() + 60
            pending = -1
            while time.monotonic() < deadline:
                try:
                    pending = int(client.xpending(INVALIDATION_STREAM, CONSUMER_GROUP)["pending"])
                    if consumer.stats["applied"] >= len(keys) and pending == 0:
                        break
                except (redis.RedisError, redis.exceptions.RedisClusterException):
                    pass
                time.sleep(0.2)
            stats = dict(consumer.stats)
        finally:
            consumer.close()
        assert stats.get("dead", 0) == 0, stats                  # none taken for poison
        assert stats.get("applied", 0) >= len(keys), stats
        assert pending == 0, stats                               # none left for an XAUTOCLAIM
        assert [client.hget(LAYOUT.fence(k), "v") for k in keys] == [b"3"] * len(keys)  # on the promoted replica
        client.close()
