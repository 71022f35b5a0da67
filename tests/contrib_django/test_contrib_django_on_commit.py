"""Category saves publish after commit: nothing for a rolled-back transaction or savepoint, one pipeline per
commit (examples/django_project)."""

from __future__ import annotations

import logging

import pytest
import redis
from django.db import transaction
from products.models import Category

from cachewarm.contrib.django import delivery
from cachewarm.contrib.django.invalidation import invalidate
from cachewarm.redis_layer.keys import INVALIDATION_STREAM

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


def published(client: redis.Redis) -> list[dict[str, str]]:
    entries = client.xrange(INVALIDATION_STREAM)
    return [{k.decode(): v.decode() for k, v in fields.items() if k != b"ts"} for _, fields in entries]


@pytest.fixture
def pipelines(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of events of each publish (each one Redis round trip)."""
    calls: list[int] = []
    publish = delivery.publish_events

    def counting(events: list[dict[str, str]], **kwargs: object) -> list[str]:
        calls.append(len(events))
        return publish(events, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(delivery, "publish_events", counting)
    return calls


def test_nothing_is_published_before_the_commit_and_one_pipeline_after(
        redis_client: redis.Redis, pipelines: list[int]) -> None:
    with transaction.atomic():
        first = Category.objects.create(name="Tools")
        second = Category.objects.create(name="Garden")
        first.name = "Hand tools"
        first.save()
        assert published(redis_client) == []
    assert published(redis_client) == [{"key": f"category:{first.pk}"}, {"key": f"category:{second.pk}"},
                                       {"key": f"category:{first.pk}"}]
    assert pipelines == [3]


def test_a_rolled_back_transaction_publishes_nothing(redis_client: redis.Redis, pipelines: list[int]) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        Category.objects.create(name="Tools")
        raise RuntimeError("the request failed")
    assert published(redis_client) == []
    assert pipelines == []


def test_a_rolled_back_savepoint_publishes_only_what_committed(redis_client: redis.Redis) -> None:
    with transaction.atomic():
        kept = Category.objects.create(name="Kept")
        with pytest.raises(RuntimeError), transaction.atomic():
            Category.objects.create(name="Dropped")
            raise RuntimeError("inner block failed")
        also = Category.objects.create(name="Also kept")
    assert published(redis_client) == [{"key": f"category:{kept.pk}"}, {"key": f"category:{also.pk}"}]


def test_autocommit_publishes_at_once(redis_client: redis.Redis) -> None:
    category = Category.objects.create(name="Tools")
    assert published(redis_client) == [{"key": f"category:{category.pk}"}]
    category.delete()
    assert len(published(redis_client)) == 2


def test_invalidate_for_writes_that_send_no_signal(redis_client: redis.Redis) -> None:
    with transaction.atomic():
        Category.objects.create(name="Tools")
        Category.objects.update(name="Renamed")
        invalidate("category:1", "category:2", tags=["categories"], version=None)
    assert published(redis_client)[1:] == [{"key": "category:1"}, {"key": "category:2"}, {"tag": "categories"}]


def test_bad_input_fails_the_writers_transaction(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="control characters"), transaction.atomic():
        Category.objects.create(name="Tools")
        invalidate("category:\x00")
    assert not Category.objects.exists()
    assert published(redis_client) == []


def test_redis_down_after_commit_is_logged_and_the_commit_stands(
        settings: object, caplog: pytest.LogCaptureFixture) -> None:
    settings.CACHEWARM = {"REDIS_URL": "redis://127.0.0.1:1/0"}  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR, logger="cachewarm.contrib.django"), transaction.atomic():
        Category.objects.create(name="Tools")
    assert Category.objects.count() == 1
    assert "not published" in caplog.text
