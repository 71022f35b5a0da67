"""A load's write of a versioned value passes a fence bumped only by versioned invalidations it covers.

A refresh takes its fence token before its fetch; before, any invalidation of the key in between refused its
write, even when the fetch had already returned that invalidation's version or a newer one. At a few events a
second per key most hot refreshes were refused (issue 12: 1,090 of 1,489 under load), and each refusal cost one
more fetch. Now such a write is refused only when a bump since its token named no version (a tag's invalidation,
one without a version), the fence was made again, or the value is older than the version floor.
"""

from __future__ import annotations

import redis

from cachewarm.redis_layer import envelope, script_calls, scripts
from cachewarm.redis_layer.keys import KeyLayout
from cachewarm.redis_layer.script_calls import WriteStatus

L = KeyLayout()
FENCE_TTL = 600


def _token(client: redis.Redis, key: str) -> str:
    client.delete(L.lease(key))  # each call a new load
    leased = scripts.run(client, script_calls.lease(L, key=key, token="w=a|1", lease_ms=5000, ahead_ms=None,
                                                    fence_keep_ms=60_000))
    assert leased.status is script_calls.LeaseStatus.TAKEN
    return leased.fence


def _invalidate(client: redis.Redis, key: str, version: int | None) -> None:
    scripts.run(client, script_calls.invalidate_key(L, key=key, version=version, fence_ttl=FENCE_TTL))


def _write(client: redis.Redis, key: str, token: str, version: int | None) -> WriteStatus:
    value = envelope.encode('"x"', fetched_ms=1, ttl_ms=60_000, version=version)
    return scripts.run(client, script_calls.write(L, key=key, envelope=value, px=60_000, fence=token,
                                                  lease_token="w=a|1", version=version, fence_ttl=FENCE_TTL,
                                                  bump=False))


def _held_version(client: redis.Redis, key: str) -> int | None:
    raw = client.get(L.value(key))
    return None if raw is None else envelope.decode(raw).version


def test_a_value_as_new_as_every_versioned_invalidation_since_the_token_is_written(
        redis_client: redis.Redis) -> None:
    token = _token(redis_client, "product:1")
    _invalidate(redis_client, "product:1", 4)
    _invalidate(redis_client, "product:1", 5)
    assert _write(redis_client, "product:1", token, 5) is WriteStatus.WRITTEN
    assert _held_version(redis_client, "product:1") == 5


def test_a_value_older_than_an_invalidation_since_the_token_is_refused(redis_client: redis.Redis) -> None:
    token = _token(redis_client, "product:2")
    _invalidate(redis_client, "product:2", 5)
    assert _write(redis_client, "product:2", token, 4) is WriteStatus.REJECTED
    assert redis_client.get(L.value("product:2")) is None


def test_an_invalidation_without_a_version_since_the_token_refuses_any_value(redis_client: redis.Redis) -> None:
    token = _token(redis_client, "product:3")
    _invalidate(redis_client, "product:3", None)
    assert _write(redis_client, "product:3", token, 10**9) is WriteStatus.REJECTED
    token = _token(redis_client, "product:3")
    _invalidate(redis_client, "product:3", 7)
    _invalidate(redis_client, "product:3", None)   # after a versioned one: still refused
    assert _write(redis_client, "product:3", token, 10**9) is WriteStatus.REJECTED


def test_an_unversioned_bump_before_the_token_does_not_refuse(redis_client: redis.Redis) -> None:
    _token(redis_client, "product:4")
    _invalidate(redis_client, "product:4", None)
    token = _token(redis_client, "product:4")      # taken after that bump
    _invalidate(redis_client, "product:4", 3)
    assert _write(redis_client, "product:4", token, 3) is WriteStatus.WRITTEN


def test_an_unversioned_value_is_still_refused_by_any_invalidation(redis_client: redis.Redis) -> None:
    token = _token(redis_client, "product:5")
    _invalidate(redis_client, "product:5", 2)
    assert _write(redis_client, "product:5", token, None) is WriteStatus.REJECTED


def test_a_fence_made_again_refuses_the_older_token(redis_client: redis.Redis) -> None:
    token = _token(redis_client, "product:6")
    redis_client.delete(L.fence("product:6"))       # evicted, or expired
    _invalidate(redis_client, "product:6", 1)       # makes the fence again, with its floor
    assert _write(redis_client, "product:6", token, 1) is WriteStatus.REJECTED
    token = _token(redis_client, "product:6")
    redis_client.delete(L.fence("product:6"))
    _token(redis_client, "product:6")               # made again by another load
    assert _write(redis_client, "product:6", token, 1) is WriteStatus.REJECTED


def test_a_fence_from_before_the_field_existed_refuses_as_before(redis_client: redis.Redis) -> None:
    token = _token(redis_client, "product:7")
    _invalidate(redis_client, "product:7", 2)
    redis_client.hdel(L.fence("product:7"), "u")    # a fence written by an older cachewarm
    assert _write(redis_client, "product:7", token, 9) is WriteStatus.REJECTED


def test_a_value_older_than_the_one_held_is_refused(redis_client: redis.Redis) -> None:
    token = _token(redis_client, "product:8")
    assert _write(redis_client, "product:8", token, 6) is WriteStatus.WRITTEN
    token = _token(redis_client, "product:8")
    _invalidate(redis_client, "product:8", 4)       # stale: the cache holds 6, nothing bumped
    assert _write(redis_client, "product:8", token, 5) is WriteStatus.REJECTED
    assert _held_version(redis_client, "product:8") == 6


def test_a_refresh_never_writes_back_an_older_version_than_the_one_held(redis_client: redis.Redis) -> None:
    token = _token(redis_client, "product:9")
    assert _write(redis_client, "product:9", token, 6) is WriteStatus.WRITTEN
    token = _token(redis_client, "product:9")      # no invalidation: the token still holds
    assert _write(redis_client, "product:9", token, 5) is WriteStatus.REJECTED
    assert _held_version(redis_client, "product:9") == 6
