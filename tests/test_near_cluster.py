"""The near cache on a real Redis Cluster (3 masters, 1 replica each): a link per master, every master's changes
pushed, and a failover (a master SIGKILLed, its replica promoted) survived without serving a replaced value."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator

import pytest
import redis.cluster

from cachewarm import envelope
from cachewarm.keys import KeyLayout
from cachewarm.near.cache import LocalBounds, NearCache
from tests.support.redis_cluster import RedisCluster
from tests.support.waiting import wait_until

PREFIX = KeyLayout().value("near:\x00").split("\x00")[0]
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as running:  # its own: the failover test kills one of its masters
        yield running


def value_key(i: int) -> str:
    return KeyLayout().value(f"near:{i}")


def put(client: redis.cluster.RedisCluster, key: str, version: int) -> None:
    now = int(time.time() * 1000)
    client.set(key, envelope.encode(json.dumps({"version": version}), fetched_ms=now, ttl_ms=600_000))


def keep_all(near: NearCache, keys: list[str]) -> None:
    for key in keys:
        ticket = near.ticket(key)
        try:
            now = int(time.time() * 1000)
            assert near.keep("near", key, ticket, key, fetched_ms=now, expires_ms=now + 600_000, raw_size=10), key
        finally:
            near.release(key)


def test_every_master_pushes_its_keys(cluster: RedisCluster) -> None:
    client = cluster.client()
    keys = [value_key(i) for i in range(30)]
    assert len({client.keyslot(k) // 5462 for k in keys}) == 3  # the keys live on all three masters
    near = NearCache(cluster.url, {"near": (PREFIX, LocalBounds(100, 1 << 20))}, cluster=True, retry_interval=0.1)
    try:
        wait_until(lambda: near.serve("near", keys[0]) is None and near.figures()["_link"]["healthy"], timeout=10,
                   what="links to every master")
        assert len(near.links) == 3
        keep_all(near, keys)
        assert all(near.serve("near", k) is not None for k in keys)
        for i, key in enumerate(keys):
            put(client, key, i)
        wait_until(lambda: all(near.serve("near", k) is None for k in keys), timeout=5, what="every copy dropped")
    finally:
        near.close()
        client.close()


def test_a_failover_is_survived(cluster: RedisCluster) -> None:
    client = cluster.client()
    keys = [value_key(i) for i in range(30)]
    near = NearCache(cluster.url, {"near": (PREFIX, LocalBounds(100, 1 << 20))}, cluster=True, retry_interval=0.1,
                     lag_limit=0.25)
    try:
        wait_until(lambda: near.serve("near", keys[0]) is None and near.figures()["_link"]["healthy"], timeout=10,
                   what="links to every master")
        keep_all(near, keys)
        victim = next(node for node in cluster.nodes[1:] if node.port in {link.address.port for link in near.links})
        assert victim.process is not None
        victim.process.send_signal(signal.SIGKILL)
        # Until the cluster has a new layout and the links follow it, nothing local is served.
        wait_until(lambda: near.serve("near", keys[0]) is None, timeout=5, what="local copies dropped")

        def healthy_again() -> bool:
            near.serve("near", keys[0])
            ports = {link.address.port for link in near.links}
            return bool(near.figures()["_link"]["healthy"]) and victim.port not in ports

        wait_until(healthy_again, timeout=30, what="links to the new layout")
        fresh = cluster.client()  # a client that learns the new layout
        keep_all(near, keys)
        for i, key in enumerate(keys):
            wait_until(lambda key=key, i=i: put(fresh, key, 100 + i) is None, timeout=10, what="a write",
                       ignore=(redis.RedisError,))
        wait_until(lambda: all(near.serve("near", k) is None for k in keys), timeout=5,
                   what="every copy dropped, the promoted replica's keys too")
        fresh.close()
    finally:
        near.close()
        client.close()
