"""Settings of the example shop. The database is SQLite (``SHOP_DATABASE``, default ``db.sqlite3`` here); the
cache is the Redis of ``CACHEWARM_REDIS_URL`` (the environment), the keyspaces this directory's cachewarm.toml."""

from __future__ import annotations

import os
from pathlib import Path

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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SHOP_DATABASE", str(BASE_DIR / "db.sqlite3")),
        # Every view runs in one transaction: a product's outbox rows commit (or roll back) with it.
        "ATOMIC_REQUESTS": True,
    }
}

# cachewarm's settings (names of the CACHEWARM_* variables without the prefix); the rest from the environment.
CACHEWARM = {"CONFIG": BASE_DIR / "cachewarm.toml"}

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    # Keyspace keys (product:42) read through cachewarm; any other key works as with Django's Redis cache.
    "cachewarm": {"BACKEND": "cachewarm.contrib.django.cache.CachewarmCache", "KEY_PREFIX": "shop"},
}

# Celery (shop/celery.py): the broker of the project; cachewarm's tasks travel on their own queues.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1")
