"""The public API is what `cachewarm.__all__` says, no more and no less (as httpx checks its own)."""

from __future__ import annotations
import __future__

import inspect
import types
from importlib.metadata import version

import cachewarm
from cachewarm import errors


def test_all_agrees_with_what_the_package_exports() -> None:
    exported = {name for name, value in vars(cachewarm).items()
                if not name.startswith("_") and not isinstance(value, types.ModuleType | __future__._Feature)}
    assert set(cachewarm.__all__) - {"__version__"} == exported
    assert cachewarm.__all__ == sorted(cachewarm.__all__)
    assert len(set(cachewarm.__all__)) == len(cachewarm.__all__)
    for name in cachewarm.__all__:
        assert getattr(cachewarm, name) is not None


def test_contract_names_are_importable() -> None:
    from cachewarm import AsyncCache, Cache, Settings, publish_invalidation

    for cls in (Cache, AsyncCache):
        for method in ("get", "lookup", "set", "delete", "exists", "clear", "invalidate_tag", "cached",
                       "from_settings"):
            assert callable(getattr(cls, method)), (cls, method)
    assert inspect.iscoroutinefunction(AsyncCache.get)
    assert not inspect.iscoroutinefunction(Cache.get)
    params = inspect.signature(Cache.set).parameters
    assert list(params)[:5] == ["self", "key", "value", "ttl", "tags"]
    params = inspect.signature(publish_invalidation).parameters
    assert next(iter(params)) == "key"
    assert {"tag", "version", "redis"} <= set(params)
    assert Settings.model_fields["redis_url"].default == "redis://127.0.0.1:6379/0"


def test_every_error_is_exported_and_under_the_base() -> None:
    classes = {name for name, value in vars(errors).items()
               if inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == errors.__name__}
    assert classes <= set(cachewarm.__all__)
    for name in classes:
        cls = getattr(errors, name)
        assert issubclass(cls, cachewarm.CachewarmError)
        assert cls.__doc__, f"{name} has no docstring"
        assert name in (errors.__doc__ or ""), f"{name} is missing from the tree in errors.py"
    assert issubclass(cachewarm.BadSourceResponse, cachewarm.SourceError)


def test_version_matches_the_distribution() -> None:
    assert cachewarm.__version__ == version("cachewarm")
