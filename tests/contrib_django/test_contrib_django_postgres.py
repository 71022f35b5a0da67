"""The outbox migration on PostgreSQL (examples/django_project with SHOP_DATABASE_URL): the table, the trigger
that NOTIFYs the relays at commit, rows the relay publishes, and the way back (``migrate cachewarm zero``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

from cachewarm.contrib.django.conf import cachewarm_settings
from cachewarm.outbox.relay import Relay
from cachewarm.redis_layer.keys import INVALIDATION_STREAM
from tests.support.postgres import shared_postgres

pytestmark = pytest.mark.timeout(90)

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django_project"
REPO = PROJECT.parents[1]
MIGRATE_AND_SAVE = ("from django.core.management import call_command; call_command('migrate', verbosity=0)\n"
                    "from django.db import transaction; from products.models import Product\n"
                    "with transaction.atomic():\n"
                    "    Product.objects.create(name='Hammer', slug='hammer', price='9.90')\n"
                    "    Product.objects.create(name='Saw', slug='saw', price='19.00')\n")


def manage(url: str, *args: str) -> str:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "shop.settings", "SHOP_DATABASE_URL": url,
           "PYTHONPATH": os.pathsep.join([str(PROJECT), str(REPO)])}
    done = subprocess.run([sys.executable, str(PROJECT / "manage.py"), *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_migration_creates_the_table_and_its_notify_trigger(redis_client: redis.Redis) -> None:
    url = shared_postgres().create_database()
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute("LISTEN cachewarm_outbox")
        manage(url, "shell", "-c", MIGRATE_AND_SAVE)
        notified = list(listener.notifies(timeout=10, stop_after=1))
        assert [n.channel for n in notified] == ["cachewarm_outbox"]  # one per transaction, not per row
        count = listener.execute("SELECT count(*) FROM cachewarm_outbox").fetchone()
        assert count is not None and count[0] == 4
    with Relay(cachewarm_settings(), url=url) as relay:
        assert relay.drain() == 4
    assert sorted(f[b"key"] for _, f in redis_client.xrange(INVALIDATION_STREAM)) == [
        b"product:1", b"product:2", b"product:slug:hammer", b"product:slug:saw"]
    manage(url, "migrate", "cachewarm", "zero", "--verbosity", "0")
    with psycopg.connect(url, autocommit=True) as conn:
        left = conn.execute("SELECT to_regclass('cachewarm_outbox'), "
                            "(SELECT count(*) FROM pg_proc WHERE proname = 'cachewarm_outbox_notify')").fetchone()
    assert left == (None, 0)
