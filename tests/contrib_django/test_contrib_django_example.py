"""The example shop end to end: its views, the relay carrying a product's outbox rows to the stream and the
consumer invalidating the cache, and `cachewarm` processes setting Django up for the ORM sources (`manage.py
cachewarm`; a plain `cachewarm` process: here with a broken project, and the worker test's sidecar)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.cache import caches
from django.db import connection, transaction
from django.test import AsyncClient, Client
from products.models import Product

from cachewarm.contrib.django.cache_io import aclose_loop_clients
from cachewarm.contrib.django.conf import cachewarm_settings
from cachewarm.contrib.django.models import OutboxEntry
from cachewarm.invalidation.consumer import InvalidationConsumer
from cachewarm.outbox.relay import Relay

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django_project"
REPO = PROJECT.parents[1]


def test_views_read_through_and_a_put_writes_the_outbox() -> None:
    product = Product.objects.create(name="Hammer", slug="hammer", price="9.90")
    OutboxEntry.objects.all().delete()
    client = Client()
    assert client.get(f"/products/{product.pk}").json() == {"product": product.as_dict()}
    assert client.get("/products/999").status_code == 404
    answer = client.put(f"/products/{product.pk}", json.dumps({"price": "12.50"}), content_type="application/json")
    assert answer.json()["product"]["price"] == "12.50" and answer.json()["product"]["version"] == 2
    assert sorted(OutboxEntry.objects.values_list("key", "version")) == [
        (f"product:{product.pk}", 2), ("product:slug:hammer", 2)]
    bad = client.put(f"/products/{product.pk}", "not json", content_type="application/json")
    assert bad.status_code == 400 and OutboxEntry.objects.count() == 2


async def test_the_async_view_reads_through_the_async_client() -> None:
    product = await Product.objects.acreate(name="Saw", slug="saw", price="19.00")
    answer = await AsyncClient().get(f"/async/products/{product.pk}")
    assert answer.json() == {"product": product.as_dict()}
    await aclose_loop_clients()


def test_the_relay_publishes_a_saves_rows_and_the_consumer_invalidates_the_cache() -> None:
    product = Product.objects.create(name="Drill", slug="drill", price="50")
    key, cache = f"product:{product.pk}", caches["cachewarm"]
    assert cache.get(key)["name"] == "Drill"
    with transaction.atomic():
        product.name = "Power drill"
        product.save()
    assert cache.get(key)["name"] == "Drill"  # committed, not yet relayed: the old value is still cached
    settings = cachewarm_settings()
    with Relay(settings, url=f"sqlite:///{connection.settings_dict['NAME']}") as relay:
        assert relay.drain() == 4  # the create's two keys, the change's two
    assert not OutboxEntry.objects.exists()
    with InvalidationConsumer(settings, name="django-test", block_ms=50) as consumer:
        assert consumer.poll() == 4
    assert cache.get(key) == Product.objects.get(pk=product.pk).as_dict()
    assert cache.get(key)["name"] == "Power drill" and cache.get(key)["version"] == 2


def _cachewarm(*args: str, redis_url: str, settings_module: str = "shop.settings",
               manage: bool = False) -> subprocess.CompletedProcess[str]:
    """`cachewarm ARGS` in a fresh process that knows the project only through DJANGO_SETTINGS_MODULE, or
    `manage.py cachewarm ARGS` (then the keyspace file comes from the CACHEWARM setting alone)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings_module, "SHOP_DATABASE": connection.settings_dict["NAME"],
           "CACHEWARM_REDIS_URL": redis_url, "PYTHONPATH": os.pathsep.join([str(PROJECT), str(REPO)])}
    env.pop("CACHEWARM_CONFIG", None)
    if manage:
        command = [sys.executable, str(PROJECT / "manage.py"), "cachewarm", *args]
    else:
        env["CACHEWARM_CONFIG"] = str(PROJECT / "cachewarm.toml")
        code = "import sys; from cachewarm.cli import main; sys.argv[0] = 'cachewarm'; main()"
        command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=40, check=False)


def test_manage_py_cachewarm_runs_with_the_cachewarm_setting_and_the_orm(redis_url: str) -> None:
    product = Product.objects.create(name="Level", slug="level", price="7")
    done = _cachewarm("warm", f"product:{product.pk}", "product:slug:level", "product:424242", redis_url=redis_url,
                      manage=True)
    assert done.returncode == 0, done.stderr
    assert "warmed 3 keys, pinned 2: 1 not_found (not pinned), 2 ok" in done.stdout
    Product.objects.filter(pk=product.pk).update(name="Changed in the database only")
    assert caches["cachewarm"].get(f"product:{product.pk}")["name"] == "Level"  # the worker path stored it


def test_a_cachewarm_process_with_a_broken_django_project_is_one_line_and_status_2(redis_url: str) -> None:
    done = _cachewarm("check-config", redis_url=redis_url, settings_module="no_such_settings_module")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1
    assert "DJANGO_SETTINGS_MODULE=no_such_settings_module: django.setup() failed: ModuleNotFoundError" in lines[0]
