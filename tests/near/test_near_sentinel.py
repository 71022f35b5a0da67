"""The near cache with the cache behind Redis Sentinel: the link goes to the master the sentinels name, and after
the master is SIGKILLed it follows the promoted replica, serving nothing local in between."""

from __future__ import annotations

import json
import time

import pytest
import redis

from cachewarm.near.cache import LocalBounds, NearCache
from cachewarm.redis_layer import envelope
from cachewarm.redis_layer.keys import KeyLayout
from tests.support.sentinel import SentinelGroup
from tests.support.waiting import wait_until

PREFIX = KeyLayout().value("near:\x00").split("\x00")[0]
KEY = KeyLayout().value("near:1")
pytestmark = pytest.mark.timeout(120)


def keep(near: NearCache) -> bool:
    ticket = near.ticket(KEY)
    try:
        now = int(time.time() * 1000)
        return near.keep("near", KEY, ticket, "copy", fetched_ms=now, expires_ms=now + 600_000, raw_size=10)
    finally:
        near.release(KEY)


def write(port: int) -> None:
    client = redis.Redis(port=port)
    now = int(time.time() * 1000)
    client.set(KEY, envelope.encode(json.dumps({"v": 1}), fetched_ms=now, ttl_ms=600_000))
    client.close()


def test_the_link_follows_the_master_through_a_failover() -> None:
    with SentinelGroup() as group:
        near = NearCache(group.url(), {"near": (PREFIX, LocalBounds(100, 1 << 20))}, retry_interval=0.1)
        try:
            wait_until(lambda: near.serve("near", KEY) is None and near.figures()["_link"]["healthy"], timeout=10,
                       what="the link to the master")
            assert near.link.address.port == group.master.port
            assert keep(near)
            write(group.master.port)
            wait_until(lambda: near.serve("near", KEY) is None, timeout=5, what="the copy dropped")

            assert keep(near)
            old = group.kill_master()
            wait_until(lambda: near.serve("near", KEY) is None, timeout=5, what="nothing local once the master died")
            group.wait_failover(old)

            def following() -> bool:
                near.serve("near", KEY)
                return bool(near.figures()["_link"]["healthy"]) and near.link.address.port != old

            wait_until(following, timeout=30, what="the link to the promoted replica")
            assert keep(near)
            new_master = group.master_port()
            assert new_master is not None and new_master != old
            write(new_master)
            wait_until(lambda: near.serve("near", KEY) is None, timeout=5, what="the new master's push")
        finally:
            near.close()
