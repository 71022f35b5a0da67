"""Django for the tests of cachewarm.contrib.django and the example shop (examples/django_project).

Django is configured here, when this directory is collected, from the example's settings module (never through
DJANGO_SETTINGS_MODULE, which would reach every subprocess of the rest of the suite), with its database in a
temporary file: the relay and the `cachewarm` subprocesses must see what the tests commit. Each test gets a clean
Redis database and the CACHEWARM dict pointing at it.

Django's own cache tests (test_contrib_django_suite.py) are fetched here too (django_suite.py: once, then from a
cache directory), before Django is set up: their models (``cache.models.Poll``) need the app ``cache`` installed.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django_project"
_tmp = Path(tempfile.mkdtemp(prefix="cachewarm-django-"))
TEST_DATABASE = _tmp / "test.sqlite3"


def pytest_configure(config: pytest.Config) -> None:
    import django
    from django.conf import settings

    if settings.configured:
        return
    from tests.contrib_django import django_suite

    sys.path.insert(0, str(PROJECT))
    shop = importlib.import_module("shop.settings")
    values = {name: getattr(shop, name) for name in dir(shop) if name.isupper()}
    values["DATABASES"]["default"]["TEST"] = {"NAME": str(TEST_DATABASE)}
    if django_suite.problem() is None:  # else the suite's one test fails with the reason
        sys.path.append(str(django_suite.fetch()))
        values["INSTALLED_APPS"] = [*values["INSTALLED_APPS"], "cache"]
    settings.configure(**values)
    django.setup()


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_tmp, ignore_errors=True)


@pytest.fixture(autouse=True)
def cachewarm_redis(settings: Any, redis_url: str) -> Iterator[str]:
    """The CACHEWARM dict of the example, on this test's clean Redis; the shared clients closed afterwards."""
    from cachewarm.contrib.django.cache_io import close_clients

    settings.CACHEWARM = {"CONFIG": PROJECT / "cachewarm.toml", "REDIS_URL": redis_url}
    yield redis_url
    close_clients()
