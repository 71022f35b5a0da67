"""The example shop's own Celery app (shop/celery.py: `install(app, cachewarm_settings())`) run as a worker: a
product saved through the outbox reaches the cache with no reader involved. The worker's sidecar relays the row
(OUTBOX_URL of the project's CACHEWARM setting, passed on by `install`), applies the invalidation, and refreshes
the hot key through the ORM source: Django set up in a process that only had DJANGO_SETTINGS_MODULE."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.cache import caches
from django.db import connection, transaction
from products.models import Product

from cachewarm.contrib.django.cache_io import shared_cache
from cachewarm.contrib.django.conf import cachewarm_settings
from cachewarm.redis_layer import envelope
from tests.support.processes import Processes, cluster_env
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django_project"
REPO = PROJECT.parents[1]


@pytest.fixture
def worker(tmp_path: Path, redis_url: str) -> Iterator[Processes]:
    database = connection.settings_dict["NAME"]
    env = cluster_env(tmp_path, redis_url=redis_url, broker_url=redis_url.rsplit("/", 1)[0] + "/1",
                      config=PROJECT / "cachewarm.toml", DJANGO_SETTINGS_MODULE="shop.settings",
                      SHOP_DATABASE=database, CELERY_BROKER_URL=redis_url.rsplit("/", 1)[0] + "/1")
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT), str(REPO)])
    processes = Processes(tmp_path, env)
    processes.spawn(sys.executable, "-m", "celery", "-A", "shop", "worker", "-Q", "cachewarm.refresh,cachewarm.scan",
                    "--loglevel", "INFO", "--pool", "prefork", "--concurrency", "1", "--without-gossip",
                    "--without-mingle", "--without-heartbeat", log="worker.log")
    try:
        yield processes
    finally:
        processes.stop()


def cached_name(key: str) -> str | None:
    """The cached value's name, read from Redis without reading through (which would load it)."""
    cache = shared_cache(cachewarm_settings())
    raw = cache.redis.get(cache.layout.value(key))
    return None if raw is None else envelope.decode(raw).value["name"]


def test_a_saved_product_is_refreshed_by_the_workers_through_the_orm(worker: Processes) -> None:
    product = Product.objects.create(name="Hammer", slug="hammer", price="9.90")
    key = f"product:{product.pk}"
    for _ in range(3):  # hot: read more than CACHEWARM_HOT_THRESHOLD times
        assert caches["cachewarm"].get(key)["name"] == "Hammer"
    shared_cache(cachewarm_settings()).flush_stats()
    with transaction.atomic():
        product.name = "Claw hammer"
        product.save()
    wait_until(lambda: cached_name(key) == "Claw hammer", 30, "the hot key refreshed by the sidecar",
               details=worker.logs)
    assert "AppRegistryNotReady" not in worker.logs()
