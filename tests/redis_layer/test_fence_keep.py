"""A load that takes an existing fence's token keeps that fence alive for the load's life.

A fence is made by the first load of a key and kept about its value's life (fence_keep_ms); a key refreshed every
period keeps the same fence. Before, an existing fence was never kept longer, so it lapsed every fence_keep_ms
whatever the refreshes, and the refresh in flight at that moment had its write refused ("fenced": the key stayed
due, was claimed again a scan later, and was often late). (issue 12 item 4)
"""

from __future__ import annotations

import redis

from cachewarm.redis_layer import script_calls, scripts
from cachewarm.redis_layer.keys import KeyLayout

L = KeyLayout()
KEEP = 10_000


def _lease(client: redis.Redis, key: str, token: str) -> script_calls.Leased:
    return scripts.run(client, script_calls.lease(L, key=key, token=token, lease_ms=5000, ahead_ms=None,
                                                  fence_keep_ms=KEEP))


def test_a_lease_keeps_an_old_fence_for_its_refresh(redis_client: redis.Redis) -> None:
    first = _lease(redis_client, "product:1", "w=a|1")
    redis_client.delete(L.lease("product:1"))
    redis_client.pexpire(L.fence("product:1"), 3000)  # made long ago: 3 s left
    second = _lease(redis_client, "product:1", "w=a|2")
    assert second.fence == first.fence               # the same fence, not a new one
    assert redis_client.pttl(L.fence("product:1")) > KEEP - 1000


def test_an_acquire_keeps_an_old_fence_for_its_load(redis_client: redis.Redis) -> None:
    first = _lease(redis_client, "product:2", "w=a|1")
    redis_client.delete(L.lease("product:2"))
    redis_client.pexpire(L.fence("product:2"), 3000)
    acquired = scripts.run(redis_client, script_calls.acquire(L, key="product:2", token="r|1", lease_ms=5000,
                                                              fence_keep_ms=KEEP))
    assert acquired.fence == first.fence
    assert redis_client.pttl(L.fence("product:2")) > KEEP - 1000


def test_a_longer_fence_is_not_shortened(redis_client: redis.Redis) -> None:
    _lease(redis_client, "product:3", "w=a|1")
    redis_client.delete(L.lease("product:3"))
    redis_client.pexpire(L.fence("product:3"), 86_400_000)  # an invalidation's fence_ttl
    _lease(redis_client, "product:3", "w=a|2")
    assert redis_client.pttl(L.fence("product:3")) > 86_000_000
