"""The CACHES backend: keyspace keys read through cachewarm (sources over the ORM), other keys with Django's API
and semantics, sync and async (examples/django_project's ``cachewarm`` cache)."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from django.core.cache import caches
from products.models import Product

from cachewarm.contrib.django.cache import CachewarmCache
from cachewarm.contrib.django.cache_io import aclose_loop_clients
from cachewarm.redis_layer.keys import INVALIDATION_STREAM

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def cache() -> CachewarmCache:
    backend = caches["cachewarm"]
    assert isinstance(backend, CachewarmCache)
    return backend


@pytest.fixture
async def acache(cache: CachewarmCache) -> AsyncIterator[CachewarmCache]:
    yield cache
    await aclose_loop_clients()


@pytest.mark.django_db(transaction=True)
def test_a_keyspace_key_reads_through_its_orm_source(cache: CachewarmCache) -> None:
    product = Product.objects.create(name="Hammer", slug="hammer", price="9.90")
    key = f"product:{product.pk}"
    assert cache.get(key) == product.as_dict()
    Product.objects.filter(pk=product.pk).update(name="Changed behind the cache's back")
    assert cache.get(key)["name"] == "Hammer"  # now a hit
    assert cache.has_key(key)
    assert cache.get("product:999999", "fallback") == "fallback"  # the source has no such product
    changed = {**product.as_dict(), "name": "Changed behind the cache's back"}
    assert cache.get_many([key, "product:slug:hammer", "missing"]) == {key: product.as_dict(),
                                                                      "product:slug:hammer": changed}
    assert cache.delete(key)
    assert cache.get(key)["name"] == "Changed behind the cache's back"


def test_a_keyspace_key_set_add_delete(cache: CachewarmCache) -> None:
    cache.set("category:7", {"id": 7, "name": "Tools", "products": []})
    assert cache.get("category:7")["name"] == "Tools"
    assert not cache.add("category:7", {"id": 7, "name": "Other", "products": []})
    assert cache.delete("category:7")
    assert cache.add("category:7", {"id": 7, "name": "Added", "products": []}, timeout=30)
    assert cache.get("category:7")["name"] == "Added"
    cache.set("category:7", {"id": 7}, timeout=0)
    assert not cache.has_key("category:7")


@pytest.mark.django_db(transaction=True)
def test_a_remembered_miss_is_not_a_value(cache: CachewarmCache) -> None:
    """After a miss (the source has no such product: a remembered "no such item"), has_key, `in`, add and
    get_or_set agree with get: nothing is cached."""
    key = "product:424242"
    assert cache.get(key, "default") == "default"
    assert not cache.has_key(key) and key not in cache
    assert cache.add(key, {"id": 424242, "name": "Added"})
    assert cache.get(key) == {"id": 424242, "name": "Added"} and cache.has_key(key)
    assert not cache.add(key, {"id": 424242, "name": "Second"})
    assert cache.get_or_set("product:434343", {"id": 434343}) == {"id": 434343}
    assert cache.get("product:434343") == {"id": 434343}


@pytest.mark.django_db(transaction=True)
async def test_a_remembered_miss_is_not_a_value_async(acache: CachewarmCache) -> None:
    key = "product:424242"
    assert await acache.aget(key, "default") == "default"
    assert not await acache.ahas_key(key)
    assert await acache.aadd(key, {"id": 424242})
    assert await acache.aget(key) == {"id": 424242}
    assert await acache.aget_or_set("product:434343", {"id": 434343}) == {"id": 434343}
    assert await acache.aget("product:434343") == {"id": 434343}


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda c: c.get("category:7", version=2), ValueError, "version=2 does not apply to keyspace key"),
    (lambda c: c.has_key("category:7", version=1), ValueError, "version=1 does not apply"),
    (lambda c: c.get_many(["a", "category:7"], version=3), ValueError, "version=3 does not apply"),
    (lambda c: c.set("category:7", {"id": 7}, None), ValueError, "timeout=None .* keyspace's TTL"),
    (lambda c: c.set("category:7", None), ValueError, "None cannot be stored under keyspace key"),
    (lambda c: c.set("category:7", (1, 2)), TypeError, "tuple is not a JSON value .*come back as a list"),
    (lambda c: c.set("category:7", {"ids": {1: 2}}), TypeError, "dict key 1 is not a str"),
    (lambda c: c.set("category:7", [float("nan")]), TypeError, "nan is not a JSON number"),
    (lambda c: c.add("category:7", b"bytes"), TypeError, "bytes is not a JSON value"),
    (lambda c: c.set_many({"fine": 1, "category:7": object()}), TypeError, "object is not a JSON value"),
])
def test_keyspace_keys_refuse_what_would_not_follow_djangos_semantics(
        cache: CachewarmCache, redis_client: redis.Redis, call: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call(cache)
    assert redis_client.dbsize() == 0  # refused before anything was written (set_many's Django key too)


def test_caller_errors_are_not_outages(cache: CachewarmCache, redis_client: redis.Redis) -> None:
    """A command Redis refuses for the value it found is the caller's error, as with Django's Redis backend;
    CacheUnavailable is for a Redis that cannot serve (test_redis_down_...)."""
    cache.set("text", "not a number")
    with pytest.raises(TypeError, match="Key 'text': cannot add 1") as raised:
        cache.incr("text")
    assert isinstance(raised.value, redis.ResponseError)  # what Django's RedisCache raises, for code written for it
    with pytest.raises(TypeError):
        cache.decr("text")
    redis_client.hset(cache.django_key("hash"), "field", "value")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        cache.get("hash")
    with pytest.raises(pickle.PickleError):
        cache.set("unpicklable", Unpicklable())


async def test_caller_errors_are_not_outages_async(acache: CachewarmCache) -> None:
    await acache.aset("text", "not a number")
    with pytest.raises(TypeError, match="Key 'text': cannot add 1"):
        await acache.aincr("text")
    with pytest.raises(pickle.PickleError):
        await acache.aset("unpicklable", Unpicklable())


class Unpicklable:
    def __reduce__(self) -> Any:
        raise pickle.PickleError("not this one")


@pytest.mark.parametrize("operation", ["incr", "decr", "touch", "incr_version"])
def test_keyspace_keys_refuse_what_their_keyspace_decides(cache: CachewarmCache, operation: str) -> None:
    with pytest.raises(ValueError, match="keyspace key"):
        getattr(cache, operation)("category:7")


def test_other_keys_follow_djangos_semantics(cache: CachewarmCache, redis_client: redis.Redis) -> None:
    cache.set("greeting", {"any": "picklable", "object": {1, 2}})
    assert cache.get("greeting") == {"any": "picklable", "object": {1, 2}}
    assert redis_client.exists("cachewarm:django:shop:1:greeting")  # KEY_PREFIX "shop", VERSION 1
    assert cache.get("greeting", version=2) is None
    assert cache.get("absent", "default") == "default"
    cache.set("nothing", None)
    assert cache.get("nothing", "default") is None and cache.get_or_set("nothing", "computed") is None
    assert cache.add("counter", 10) and not cache.add("counter", 99)
    assert cache.incr("counter") == 11 and cache.decr("counter", 5) == 6
    assert cache.get("counter") == 6
    with pytest.raises(ValueError):
        cache.incr("absent")
    assert not redis_client.exists("cachewarm:django:shop:1:absent")
    assert cache.set_many({"a": 1, "b": [2], "category:8": {"id": 8}}) == []
    assert cache.get_many(["a", "b", "category:8", "c"]) == {"a": 1, "b": [2], "category:8": {"id": 8}}
    cache.delete_many(["a", "category:8"])
    assert not cache.has_key("a") and cache.has_key("b") and not cache.has_key("category:8")
    assert cache.touch("b", 100) and redis_client.ttl("cachewarm:django:shop:1:b") == 100
    assert cache.touch("b", None) and redis_client.ttl("cachewarm:django:shop:1:b") == -1
    assert not cache.touch("absent")
    assert cache.incr_version("b") == 2 and cache.get("b", version=2) == [2]
    assert cache.get_or_set("made", lambda: "computed") == "computed"
    assert cache.delete("made") and not cache.delete("made")


def test_clear_removes_djangos_keys_only(cache: CachewarmCache, redis_client: redis.Redis) -> None:
    cache.set("mine", 1)
    cache.set("category:9", {"id": 9})
    redis_client.xadd(INVALIDATION_STREAM, {"key": "category:1"})
    assert cache.clear()
    assert not cache.has_key("mine")
    assert cache.has_key("category:9")
    assert redis_client.xlen(INVALIDATION_STREAM) == 1


@pytest.mark.django_db(transaction=True)
async def test_the_async_twins(acache: CachewarmCache) -> None:
    product = await Product.objects.acreate(name="Saw", slug="saw", price="19.00")
    key = f"product:{product.pk}"
    assert (await acache.aget(key))["name"] == "Saw"
    assert await acache.ahas_key(key)
    await acache.aset("greeting", ("a", "tuple"))
    assert await acache.aget("greeting") == ("a", "tuple")
    assert await acache.aadd("n", 1) and await acache.aincr("n", 2) == 3 and await acache.adecr("n") == 2
    assert await acache.aset_many({"x": 1, "category:3": {"id": 3}}) == []
    assert await acache.aget_many(["x", "category:3", key]) == {"x": 1, "category:3": {"id": 3},
                                                               key: product.as_dict()}
    assert await acache.atouch("x", 50)
    await acache.adelete_many(["x", "category:3"])
    assert not await acache.ahas_key("x") and not await acache.ahas_key("category:3")
    assert await acache.adelete(key)
    assert await acache.aclear()
    assert await acache.aget("n") is None


async def test_each_event_loop_gets_its_own_client(cache: CachewarmCache) -> None:
    results: list[Any] = []

    async def in_loop() -> None:
        await cache.aset("shared", 1)
        results.append(await cache.aget("shared"))
        await aclose_loop_clients()

    await in_loop()
    await asyncio.to_thread(asyncio.run, in_loop())
    assert results == [1, 1]


def test_a_wrong_setting_is_a_django_system_check_error(settings: Any) -> None:
    from django.core import checks

    assert checks.run_checks(tags=["cachewarm"]) == []
    settings.CACHEWARM = {"REDIS_URL": "http://nope", "CONFIG": "x.toml"}
    errors = checks.run_checks(tags=["cachewarm"])
    assert [e.id for e in errors] == ["cachewarm.E001"] and "CACHEWARM_REDIS_URL" in errors[0].msg
    settings.CACHEWARM = {"NO_SUCH": 1}
    assert "CACHEWARM['NO_SUCH']: unknown cachewarm setting" in checks.run_checks(tags=["cachewarm"])[0].msg


@pytest.mark.django_db(transaction=True)
def test_redis_down_keyspace_reads_fall_back_to_the_source_and_djangos_keys_raise(settings: Any) -> None:
    from cachewarm.errors import CacheUnavailable

    settings.CACHES = {**settings.CACHES, "down": {
        "BACKEND": "cachewarm.contrib.django.cache.CachewarmCache", "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"REDIS_TIMEOUT": 0.2}}}
    product = Product.objects.create(name="Hammer", slug="hammer", price="9.90")
    down = caches["down"]
    assert down.get(f"product:{product.pk}")["name"] == "Hammer"  # cachewarm's fallback: straight to the source
    with pytest.raises(CacheUnavailable):
        down.get("greeting")
    with pytest.raises(CacheUnavailable):
        down.set("greeting", 1)
