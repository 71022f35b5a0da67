"""`fence_replica_wait` (issue 10 item 4): a keyspace that asks for it has the invalidation apply path end with
`WAIT 1 <ms>` on each master holding its keys, so a replica holds the fence bumps and version floors before the
events count as applied; keyspaces that do not ask send no WAIT. With every replica down the wait runs out: the
events are applied on the masters and acknowledged all the same (counted `unreplicated`), none is lost."""

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
from cachewarm.config.keyspaces import KeyspaceRegistry
from cachewarm.invalidation.apply import apply_events
from cachewarm.invalidation.consumer import InvalidationConsumer
from cachewarm.invalidation.events import Event
from cachewarm.outcomes import InvalidationOutcome
from cachewarm.redis_layer.keys import CONSUMER_GROUP, INVALIDATION_STREAM, KeyLayout
from tests.redis_layer.test_cluster_scripts import calls_of, masters
from tests.support.redis_cluster import RedisCluster

pytestmark = pytest.mark.timeout(90)

LAYOUT = KeyLayout("cachewarm:")  # Settings.key_prefix's default
SOURCE = "python:tests.support.sources_fixture:counted"
KEYSPACES = {
    "item": {"pattern": "item:{id}", "source": SOURCE, "ttl": 60, "fence_replica_wait": 2.0},
    "other": {"pattern": "other:{id}", "source": SOURCE, "ttl": 60},
}
CONFIG = f"""
[keyspaces.item]
pattern = "item:{{id}}"
source = "{SOURCE}"
ttl = 60
fence_replica_wait = 0.2
"""


def replicas(cluster: RedisCluster) -> dict[int, Any]:
    """master port -> a READONLY connection to its replica (a cluster replica answers reads of its master's slots
    only after READONLY)."""
    found: dict[int, Any] = {}
    for node in cluster.nodes:
        client: Any = redis.Redis(port=node.port, socket_timeout=5, single_connection_client=True)
        info = client.info("replication")
        if info.get("role") == "slave":
            client.execute_command("READONLY")
            found[int(info["master_port"])] = client
        else:
            client.close()
    return found


def test_the_wait_is_sent_and_the_replica_has_the_fences(redis_cluster: RedisCluster) -> None:
    redis_cluster.flush()
    client: Any = redis_cluster.client(socket_timeout=5)
    nodes = masters(redis_cluster)
    copies = replicas(redis_cluster)
    try:
        registry = KeyspaceRegistry.from_mapping(KEYSPACES)
        for node in nodes:
            node.config_resetstat()
        plain = apply_events(client, [Event(f"1-{i}", "key", f"other:{i}", version=1) for i in range(30)],
                             layout=LAYOUT, fence_ttl=60, keyspaces=registry)
        assert calls_of(nodes).get("wait", 0) == 0        # a keyspace without the option: no WAIT
        assert set(plain.outcomes.values()) == {InvalidationOutcome.APPLIED}

        events = [Event(f"2-{i}", "key", f"item:{i}", version=i + 1) for i in range(30)]
        applied = apply_events(client, events, layout=LAYOUT, fence_ttl=60, keyspaces=registry)
        assert set(applied.outcomes.values()) == {InvalidationOutcome.APPLIED}
        assert applied.unreplicated == 0
        assert calls_of(nodes).get("wait", 0) == 3        # one per master holding some of the keys, once
        for i in range(30):  # read from the replicas straight after: WAIT returned once they had them
            fence = LAYOUT.fence(f"item:{i}")
            master = client.nodes_manager.get_node_from_slot(client.keyslot(fence))
            assert copies[master.port].hget(fence, "v") == str(i + 1).encode()
    finally:
        client.close()
        for conn in [*nodes, *copies.values()]:
            conn.close()


def test_a_tag_walk_waits_too(redis_cluster: RedisCluster) -> None:
    redis_cluster.flush()
    client: Any = redis_cluster.client(socket_timeout=5)
    nodes = masters(redis_cluster)
    try:
        registry = KeyspaceRegistry.from_mapping(KEYSPACES)
        for i in range(10):
            client.zadd(LAYOUT.tag("t"), {f"item:{i}": time.time() * 1000 + 60_000})
        for node in nodes:
            node.config_resetstat()
        applied = apply_events(client, [Event("3-0", "tag", "t")], layout=LAYOUT, fence_ttl=60, keyspaces=registry)
        assert applied.outcomes == {"3-0": InvalidationOutcome.APPLIED} and len(applied.keys) == 10
        assert calls_of(nodes).get("wait", 0) >= 1
    finally:
        client.close()
        for node in nodes:
            node.close()


def test_a_master_dying_during_the_wait_leaves_the_event_to_be_applied_on_its_replica(
        write_config: Callable[[str], Path]) -> None:
    """The case the option is for: the master applied the bump, its replica has not got it (its link cut, and
    stopped so that it cannot reconnect), the master dies. The WAIT fails, the event stays pending and is applied
    again on the promoted replica: its floor is there afterwards (without the option the event would have been
    acknowledged and the floor lost)."""
    with RedisCluster() as cluster:
        config = CONFIG.replace("fence_replica_wait = 0.2", "fence_replica_wait = 3")
        settings = Settings.load(redis_url=cluster.url, redis_cluster=True, config=write_config(config))
        client: Any = cluster.client(socket_timeout=5)
        stream = client.nodes_manager.get_node_from_slot(client.keyslot(INVALIDATION_STREAM)).port
        victim = next(n.port for n in client.get_primaries() if n.port != stream)
        key = next(k for k in (f"item:{i}" for i in range(300))
                   if client.nodes_manager.get_node_from_slot(client.keyslot(LAYOUT.fence(k))).port == victim)
        by_port = {node.port: node for node in cluster.nodes}
        heir = next(p for p in by_port if p != victim and
                    int(redis.Redis(port=p).info("replication").get("master_port", 0)) == victim)
        heir_pid, victim_pid = by_port[heir].process.pid, by_port[victim].process.pid  # type: ignore[union-attr]
        # its URL names a node that stays up (the one holding the stream)
        consumer = InvalidationConsumer(settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{stream}/0"}),
                                        block_ms=50)
        consumer.ensure_group()
        master: Any = redis.Redis(port=victim, socket_timeout=2)
        os.kill(heir_pid, signal.SIGSTOP)  # the replica cannot reconnect...
        stopped = True
        try:
            master.execute_command("CLIENT", "KILL", "TYPE", "replica")  # ...once its link is cut: writes stay here
            consumer.start()
            publish_invalidation(key, version=9, redis=client, settings=settings)
            deadline = time.monotonic() + 20
            while master.hget(LAYOUT.fence(key), "v") != b"9" and time.monotonic() < deadline:
                time.sleep(0.02)
            assert master.hget(LAYOUT.fence(key), "v") == b"9"   # applied on the master; the WAIT is waiting
            os.kill(victim_pid, signal.SIGKILL)
            os.kill(heir_pid, signal.SIGCONT)
            stopped = False
            deadline = time.monotonic() + 60
            floor, pending = None, -1
            while time.monotonic() < deadline:
                try:
                    floor = client.hget(LAYOUT.fence(key), "v")
                    pending = int(client.xpending(INVALIDATION_STREAM, CONSUMER_GROUP)["pending"])
                    if floor == b"9" and pending == 0:
                        break
                except (redis.RedisError, redis.exceptions.RedisClusterException):
                    pass
                time.sleep(0.2)
            assert floor == b"9", dict(consumer.stats)               # the promoted replica has the floor
            assert pending == 0, dict(consumer.stats)
        finally:
            if stopped:
                os.kill(heir_pid, signal.SIGCONT)
            consumer.close()
            client.close()


def test_with_every_replica_down_the_events_are_applied_and_acknowledged(
        write_config: Callable[[str], Path]) -> None:
    with RedisCluster() as cluster:  # its own: its replicas are killed
        for node in cluster.nodes:
            if redis.Redis(port=node.port).info("replication").get("role") == "slave":
                assert node.process is not None
                os.kill(node.process.pid, signal.SIGKILL)
        settings = Settings.load(redis_url=cluster.url, redis_cluster=True, config=write_config(CONFIG))
        client: Any = cluster.client(socket_timeout=5)
        consumer = InvalidationConsumer(settings, block_ms=50)
        try:
            consumer.ensure_group()
            for i in range(20):
                publish_invalidation(f"item:{i}", version=7, settings=settings)
            deadline = time.monotonic() + 30
            while consumer.stats["applied"] < 20 and time.monotonic() < deadline:
                consumer.poll()
            consumer.poll(block_ms=0)  # sends the deferred acknowledgements
            assert consumer.stats["applied"] == 20
            assert consumer.stats["unreplicated"] >= 1       # the wait ran out: no replica to acknowledge
            assert consumer.stats["error"] == 0
            assert int(client.xpending(INVALIDATION_STREAM, CONSUMER_GROUP)["pending"]) == 0  # none left over
            assert all(client.hget(LAYOUT.fence(f"item:{i}"), "v") == b"7" for i in range(20))
        finally:
            consumer.close()
            client.close()
