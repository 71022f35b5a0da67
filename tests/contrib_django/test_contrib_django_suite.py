"""Django's own cache tests (``BaseCacheTests`` of tests/cache/tests.py in Django's sdist, for the installed Django;
fetched by django_suite.py) against the CACHES backend, as every backend Django ships is held to them:

- `TestOutsideKeyspaces`: keys no keyspace matches (Django's semantics, pickled values): every test passes;
  culling is skipped exactly as for Django's Redis backend (no ``cull``/``zero_cull`` caches).
- `TestOutsideKeyspacesAsync`: the same tests, every call through its async twin (``aget`` for ``get`` ...), each
  in an event loop of its own as an ASGI request's would be (asgiref's `async_to_sync`, from the test's thread).
- `TestInsideAKeyspace`: every key a keyspace key (django_suite.toml: pattern ``{key}``, a source with no item):
  the tests in KEYSPACE_DIFFERENCES are strict expected failures with the error they must fail with, the same
  table as docs/DJANGO.md; any other failure, or one of them passing, fails the suite.
- `TestReferenceRedisCache` and `TestReferenceRedisCacheAsync`: Django's own Redis backend through the same two
  classes, on the same redis-server: what "as Django's Redis backend does" means, measured beside ours.

Each test gets the session's redis-server, flushed (tests/conftest.py), and Django's test settings
(``caches_setting_for_tests``) with LOCATION pointing at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.core.cache import caches as real_caches
from django.test import TestCase, override_settings

from cachewarm.contrib.django.cache_io import aclose_loop_clients
from cachewarm.errors import ValueNotSerializable
from tests.contrib_django import django_suite

pytestmark = pytest.mark.timeout(120)

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1] / "examples" / "django_project"
OURS = "cachewarm.contrib.django.cache.CachewarmCache"
REDIS = "django.core.cache.backends.redis.RedisCache"
EXCLUDED = {"cull", "zero_cull"}  # as Django's RedisCacheTests: no culling options (MAX_ENTRIES) for Redis

# Django's tests that do not pass for keyspace keys: what each raises, and why. docs/DJANGO.md has the same table.
NONE = "None means 'no such item' for a keyspace key: storing it raises ValueError"
NOT_JSON = "keyspace values are JSON: a value JSON cannot hold as it is raises ValueNotSerializable (a TypeError)"
VERSION = "version= does not apply to a keyspace key (a name other processes know): ValueError"
KEYSPACE_DECIDES = "incr/decr/touch/incr_version: the keyspace decides a keyspace key's value and TTL: ValueError"
FOREVER = "timeout=None: a keyspace key's value lives for the keyspace's TTL: ValueError"
SHARED_NAME = "KEY_PREFIX/VERSION/KEY_FUNCTION settings do not apply to keyspace keys: every alias sees the same key"
NOT_VALIDATED = "keyspace keys are used as they are: no CacheKeyWarning (memcached portability) for them"
KEYSPACE_DIFFERENCES: dict[str, tuple[type[BaseException], str]] = {
    "test_default_used_when_none_is_set": (ValueError, NONE),
    "test_prefix": (AssertionError, SHARED_NAME),
    "test_get_many": (ValueError, NONE),
    "test_has_key": (ValueError, FOREVER),
    "test_in": (ValueError, NONE),
    "test_incr": (ValueError, KEYSPACE_DECIDES),
    "test_decr": (ValueError, KEYSPACE_DECIDES),
    "test_data_types": (ValueNotSerializable, NOT_JSON + " (a tuple, a function, a class)"),
    "test_cache_read_for_model_instance": (ValueNotSerializable, NOT_JSON + " (a model instance)"),
    "test_cache_write_for_model_instance_with_deferred": (ValueNotSerializable, NOT_JSON + " (a queryset)"),
    "test_cache_read_for_model_instance_with_deferred": (ValueNotSerializable, NOT_JSON + " (a queryset)"),
    "test_touch": (ValueError, KEYSPACE_DECIDES),
    "test_binary_string": (ValueNotSerializable, NOT_JSON + " (bytes)"),
    "test_clear": (AssertionError, "clear() removes Django's own keys only: keyspace keys are cleared with "
                                   "cachewarm's clear/invalidate_tag (other processes read them)"),
    "test_forever_timeout": (ValueError, FOREVER),
    "test_zero_timeout": (ValueError, KEYSPACE_DECIDES + " (touch)"),
    "test_invalid_key_characters": (AssertionError, NOT_VALIDATED),
    "test_invalid_key_length": (AssertionError, NOT_VALIDATED),
    "test_invalid_with_version_key_length": (AssertionError, NOT_VALIDATED),
    "test_cache_versioning_get_set": (ValueError, VERSION),
    "test_cache_versioning_add": (ValueError, VERSION),
    "test_cache_versioning_has_key": (ValueError, VERSION),
    "test_cache_versioning_delete": (ValueError, VERSION),
    "test_cache_versioning_incr_decr": (ValueError, VERSION),
    "test_cache_versioning_get_set_many": (ValueError, VERSION),
    "test_incr_version": (ValueError, VERSION),
    "test_decr_version": (ValueError, VERSION),
    "test_custom_key_func": (AssertionError, SHARED_NAME),
    "test_cache_write_unpicklable_object": (ValueNotSerializable, NOT_JSON + " (an HttpResponse)"),
    "test_add_fail_on_pickleerror": (ValueNotSerializable, NOT_JSON + " (raised instead of PickleError)"),
    "test_set_fail_on_pickleerror": (ValueNotSerializable, NOT_JSON + " (raised instead of PickleError)"),
    "test_get_or_set": (ValueError, NONE),
    "test_get_or_set_callable": (ValueError, NONE),
    "test_get_or_set_version": (ValueError, VERSION),
}
# Django's own Redis backend through its async twins: it has no aincr of its own, and BaseCache's (aget, then aset)
# raises TypeError for a value that is not an integer where its incr raises redis's ResponseError.
NO_AINCR = "RedisCache has no native aincr: BaseCache.aincr raises TypeError, its incr a ResponseError"
REFERENCE_ASYNC_DIFFERENCES: dict[str, tuple[type[BaseException], str]] = {
    "test_incr": (TypeError, NO_AINCR),
    "test_decr": (TypeError, NO_AINCR),
}


if django_suite.problem() is not None:
    def test_djangos_cache_tests_are_available() -> None:
        pytest.fail(django_suite.problem() or "", pytrace=False)

else:
    import redis
    from cache import tests as djangos  # Django's tests/cache/tests.py (its app "cache" is installed: conftest)

    class ThroughAsyncTwins:
        """A cache whose every call of Django's cache API runs the backend's async twin (`aget` for `get`, ...) on
        the test's event loop, as an ASGI server's loop would (thread-sensitive sync work goes to asgiref's one sync
        thread). Everything else is the backend's own."""

        TWINS = frozenset({"add", "get", "set", "touch", "delete", "get_many", "get_or_set", "has_key", "incr",
                           "decr", "set_many", "delete_many", "clear", "incr_version", "decr_version", "close"})

        def __init__(self, alias: str, runner: asyncio.Runner) -> None:
            real_caches[alias]  # an unknown alias raises here
            object.__setattr__(self, "_alias", alias)
            object.__setattr__(self, "_runner", runner)

        @property
        def backend(self) -> Any:
            return real_caches[self._alias]

        def __getattr__(self, name: str) -> Any:
            if name not in self.TWINS:
                return getattr(self.backend, name)
            twin = getattr(self.backend, f"a{name}")
            return lambda *args, **kwargs: self._runner.run(twin(*args, **kwargs))

        def __setattr__(self, name: str, value: Any) -> None:
            setattr(self.backend, name, value)

        def __contains__(self, key: Any) -> bool:
            return bool(self.has_key(key))

    class AsyncCaches:
        def __init__(self, runner: asyncio.Runner) -> None:
            self.runner = runner

        def __getitem__(self, alias: str) -> ThroughAsyncTwins:
            return ThroughAsyncTwins(alias, self.runner)

    class Row(djangos.BaseCacheTests):  # type: ignore[misc]
        """One row: a backend and its OPTIONS, on the test's Redis (the `_caches` fixture applies them)."""

        backend = OURS
        options: dict[str, Any] = {}
        through_async_twins = False

        @classmethod
        def params(cls, redis_url: str) -> dict[str, Any]:
            return {"BACKEND": cls.backend, "LOCATION": redis_url, "OPTIONS": dict(cls.options)}

        def setUp(self) -> None:
            super().setUp()
            if self.through_async_twins:  # one event loop per test; its cachewarm clients closed before it ends
                runner = asyncio.Runner()
                self.addCleanup(runner.close)
                self.addCleanup(runner.run, aclose_loop_clients())
                for name, value in (("cache", ThroughAsyncTwins("default", runner)), ("caches", AsyncCaches(runner))):
                    patcher = mock.patch.object(djangos, name, value)
                    patcher.start()
                    self.addCleanup(patcher.stop)

    @pytest.fixture(autouse=True)
    def _caches(request: pytest.FixtureRequest, redis_url: str) -> Iterator[None]:
        """Django's test CACHES (``caches_setting_for_tests``) for this row, on the test's clean Redis."""
        row: type[Row] | None = request.cls
        if row is None:  # a plain test of this module
            yield
            return
        setting = djangos.caches_setting_for_tests(base=row.params(redis_url), exclude=EXCLUDED)
        with override_settings(CACHES=setting):
            yield

    def expecting(table: dict[str, tuple[type[BaseException], str]]) -> Callable[[type[Row]], type[Row]]:
        """A row's class with Django's tests named in `table` as strict expected failures that must raise what the
        table says. They run without subtests (pytest would judge each subtest against the mark): the first
        difference ends one."""
        def decorate(cls: type[Row]) -> type[Row]:
            for name, test in _expected_failures(table).items():
                setattr(cls, name, test)
            return cls

        return decorate

    def _expected_failures(table: dict[str, tuple[type[BaseException], str]]) -> dict[str, Any]:
        marked = {}
        for name, (raises, reason) in table.items():
            original = getattr(djangos.BaseCacheTests, name)

            @functools.wraps(original)
            def test(self: Any, _original: Callable[..., Any] = original) -> Any:
                with mock.patch.object(self, "subTest", lambda *args, **kwargs: contextlib.nullcontext()):
                    return _original(self)

            marked[name] = pytest.mark.xfail(strict=True, raises=raises, reason=reason)(test)
        return marked

    class TestOutsideKeyspaces(Row, TestCase):
        incr_decr_type_error = TypeError
        options = {"CONFIG": str(PROJECT / "cachewarm.toml")}  # the example's: no test key matches

    class TestOutsideKeyspacesAsync(TestOutsideKeyspaces):
        through_async_twins = True

    @expecting(KEYSPACE_DIFFERENCES)
    class TestInsideAKeyspace(Row, TestCase):
        options = {"CONFIG": str(HERE / "django_suite.toml")}  # pattern "{key}": every test key

    class TestReferenceRedisCache(Row, TestCase):
        backend = REDIS
        incr_decr_type_error = redis.ResponseError

        @classmethod
        def params(cls, redis_url: str) -> dict[str, Any]:
            return {"BACKEND": cls.backend, "LOCATION": redis_url}

    @expecting(REFERENCE_ASYNC_DIFFERENCES)
    class TestReferenceRedisCacheAsync(TestReferenceRedisCache):
        through_async_twins = True



def test_a_sdist_that_is_not_the_locked_one_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Django's code runs here only when its sdist is one requirements-lock.txt records (for a locked version)."""
    import io
    import tarfile

    import django

    fake = tmp_path / f"django-{django.__version__}.tar.gz"
    with tarfile.open(fake, "w:gz") as archive:
        data = b"# not Django's\n"
        member = tarfile.TarInfo(f"django-{django.__version__}/tests/cache/tests.py")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(django_suite.SDIST_ENV, str(fake))
    monkeypatch.setattr(django_suite, "locked_sha256s", lambda version: frozenset({"0" * 64}))
    with pytest.raises(django_suite.Unavailable, match=r"is not one that requirements-lock\.txt records"):
        django_suite.fetch.__wrapped__()
    assert not django_suite.cache_root(django.__version__).exists()


def test_the_docs_table_is_the_expected_failures() -> None:
    """docs/DJANGO.md's conformance table names exactly the tests (and errors) marked here."""
    text = (HERE.parents[1] / "docs" / "DJANGO.md").read_text(encoding="utf-8")
    table = text[text.index("### Conformance table"):text.index("They pass for keyspace keys")]
    documented = dict(re.findall(r"^\| `(test_\w+)` \| (\w+) \|", table, re.M))
    assert documented == {name: raises.__name__ for name, (raises, _) in KEYSPACE_DIFFERENCES.items()}
