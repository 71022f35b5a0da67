"""Settings of the example shop. The database is SQLite (``SHOP_DATABASE``, default ``db.sqlite3`` here) or the
PostgreSQL of ``SHOP_DATABASE_URL``; the cache is the Redis of ``CACHEWARM_REDIS_URL`` (the environment), the
keyspaces this directory's cachewarm.toml."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("SHOP_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("SHOP_DEBUG", "0") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "cachewarm.contrib.django",   # the outbox table (cachewarm_outbox) and its migration
    "products",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "shop.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _database(url: str) -> dict[str, object]:
    """SQLite in ``SHOP_DATABASE`` (a path), or PostgreSQL from ``SHOP_DATABASE_URL=postgresql://user@host:port/db``;
    every view runs in one transaction (``ATOMIC_REQUESTS``): a product's outbox rows commit or roll back with it."""
    if not url:
        return {"ENGINE": "django.db.backends.sqlite3", "ATOMIC_REQUESTS": True,
                "NAME": os.environ.get("SHOP_DATABASE", str(BASE_DIR / "db.sqlite3"))}
    parts = urlsplit(url)
    return {"ENGINE": "django.db.backends.postgresql", "ATOMIC_REQUESTS": True, "NAME": parts.path.lstrip("/"),
            "USER": parts.username or "", "PASSWORD": parts.password or "", "HOST": parts.hostname or "",
            "PORT": str(parts.port or "")}


DATABASES = {"default": _database(os.environ.get("SHOP_DATABASE_URL", ""))}

# cachewarm's settings (names of the CACHEWARM_* variables without the prefix); the rest from the environment.
# OUTBOX_URL: the workers (celery -A shop, manage.py cachewarm run) and `manage.py cachewarm relay` relay this
# database's cachewarm_outbox rows.
CACHEWARM = {
    "CONFIG": BASE_DIR / "cachewarm.toml",
    "OUTBOX_URL": os.environ.get("SHOP_DATABASE_URL") or f"sqlite:///{DATABASES['default']['NAME']}",
}

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    # Keyspace keys (product:42) read through cachewarm; any other key works as with Django's Redis cache.
    "cachewarm": {"BACKEND": "cachewarm.contrib.django.cache.CachewarmCache", "KEY_PREFIX": "shop"},
}

# Celery (shop/celery.py): the broker of the project; cachewarm's tasks travel on their own queues.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1")
