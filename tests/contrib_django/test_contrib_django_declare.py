"""Declarations and settings: what `invalidate_on_change` refuses, what post_init tracking never does (fetch a
deferred field), and where cachewarm's settings come from in a Django project."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import caches
from django.db import models
from products.models import Product

from cachewarm.contrib.django.conf import cachewarm_settings
from cachewarm.contrib.django.invalidation import invalidate_on_change, render, template_fields
from cachewarm.contrib.django.models import OutboxEntry
from cachewarm.errors import ConfigError

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"keys": ["product:{id}"], "via": "kafka"}, "via must be one of"),
    ({}, "at least one key or tag"),
    ({"keys": ["product:{id:>5}"]}, "plain field names"),
    ({"keys": ["product:{category.name}"]}, "plain field names"),
    ({"keys": {"product:{id}": "version"}, "version": "version"}, "per key"),
    ({"keys": ["product:{slgu}"]}, "Product has no field or attribute 'slgu'"),
    ({"keys": ["product:{id}"], "version": "revision"}, "Product has no field or attribute 'revision'"),
])
def test_declarations_refuse_what_cannot_work(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        invalidate_on_change(Product, **kwargs)


def test_templates_skip_a_none_value() -> None:
    assert template_fields("price:{region}:{id}") == ["region", "id"]
    values = {"id": 7, "region": None}
    assert render(["price:{region}:{id}", "product:{id}"], values.__getitem__) == ["product:7"]


@pytest.mark.django_db
def test_a_deferred_field_is_never_fetched_to_remember_it(django_assert_num_queries: Any) -> None:
    Product.objects.create(name="Hammer", slug="hammer", price="9.90")
    with django_assert_num_queries(1):
        loaded = Product.objects.only("name").get(slug="hammer")
    assert "slug" not in loaded.__dict__


@pytest.mark.django_db
def test_loaddata_rows_are_not_changes() -> None:
    product = Product(name="Fixture", slug="fixture", price="1", pk=77)
    models.signals.post_save.send(Product, instance=product, created=True, raw=True, using="default",
                                  update_fields=None)
    assert not OutboxEntry.objects.exists()


def test_the_cachewarm_dict_wins_over_the_environment(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEWARM_NEGATIVE_TTL", "9")
    monkeypatch.setenv("CACHEWARM_STREAM_MAXLEN", "1234")
    settings.CACHEWARM = {**settings.CACHEWARM, "negative_ttl": 2}
    loaded = cachewarm_settings()
    assert (loaded.negative_ttl, loaded.stream_maxlen) == (2, 1234)
    assert cachewarm_settings() is loaded  # built once, until the setting changes
    settings.CACHEWARM = {**settings.CACHEWARM, "NEGATIVE_TTL": "soon"}
    with pytest.raises(ConfigError, match="CACHEWARM_NEGATIVE_TTL"):
        cachewarm_settings()


def test_a_backends_location_and_options_override_the_dict(settings: Any, redis_url: str) -> None:
    settings.CACHES = {**settings.CACHES, "other": {
        "BACKEND": "cachewarm.contrib.django.cache.CachewarmCache", "LOCATION": redis_url.replace("/0", "/3"),
        "OPTIONS": {"KEY_PREFIX": "other:"}}}
    backend = caches["other"]
    assert backend.settings.redis_url.endswith("/3") and backend.settings.key_prefix == "other:"
    backend.set("k", 1)
    assert backend.django_key("k") == "other:django::1:k" and backend.get("k") == 1
