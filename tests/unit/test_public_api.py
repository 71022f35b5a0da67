"""The public API is what `cachewarm.__all__` says, no more and no less (as httpx checks its own); and every path
README, docs/ and the outside contract name (modules, programs, commands, settings) keeps working."""

from __future__ import annotations
import __future__

import importlib
import importlib.util
import inspect
import subprocess
import sys
import types
from importlib.metadata import entry_points, version

import click
import pytest

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


# Every name README, docs/ and the outside contract tell users to import or run, by the path they give: a layout
# change inside cachewarm/ must keep each one working.
DOCUMENTED_NAMES = {
    "cachewarm": ["AsyncCache", "Cache", "Lookup", "Settings", "publish_invalidation", "CachewarmError",
                  "ConfigError"],
    "cachewarm.client": ["AsyncCache", "Cache", "Lookup", "InvalidKey"],
    "cachewarm.settings": ["Settings", "mask_url"],
    "cachewarm.hooks": ["Hooks", "get_hooks", "set_hooks"],
    "cachewarm.worker.install": ["install"],
    "cachewarm.worker.periodic": ["create_scan_task"],
    "cachewarm.worker.sidecar": ["main"],
    "cachewarm.worker.invalidation_process": ["main"],
    "cachewarm.invalidation": ["publish_invalidation", "Event", "parse_entry"],
    "cachewarm.invalidation.publish": ["publish_invalidation", "publish_events"],
    "cachewarm.invalidation.consumer": ["InvalidationConsumer"],
    "cachewarm.outbox": ["outbox_row", "write_outbox"],
    "cachewarm.outbox.relay": ["Relay"],
    "cachewarm.metrics": ["register_process_metrics", "ClusterCollector"],
    "cachewarm.contrib.sqlalchemy": ["CacheInvalidator", "outbox_table"],
    "cachewarm.contrib.django": [],
    "cachewarm.contrib.django.conf": ["cachewarm_settings"],
    "cachewarm.contrib.django.sources": ["orm_source"],
    "cachewarm.contrib.django.cache_io": ["aclose_loop_clients"],
    "cachewarm.cli": ["main", "cli"],
    "cachewarm.demo.source": ["main"],
}
# Modules run as programs: `python -m NAME` (console script `cachewarm` = cachewarm.cli:main).
DOCUMENTED_PROGRAMS = ["cachewarm", "cachewarm.worker.sidecar", "cachewarm.worker.invalidation_process",
                       "cachewarm.demo.source"]
# The commands of `cachewarm` (CLI output and options are held by each command's own tests).
COMMANDS = ["audit", "check-config", "demo", "inspect", "invalidate", "pins", "relay", "run", "simulate", "status",
            "trace", "unpin", "warm"]
# Every setting (CACHEWARM_<NAME>), as README's table documents them.
SETTINGS = ["broker_sentinel_master", "broker_url", "claim_idle_ms", "config", "fence_ttl", "hot_half_life",
            "hot_threshold", "key_prefix", "lease_ms", "max_deliveries", "max_plans", "max_tracked_keys",
            "metrics_host", "metrics_port", "near_lag_limit", "near_ping_interval", "negative_ttl",
            "outbox_batch_size", "outbox_poll_interval", "outbox_url", "redis_backoff", "redis_cluster",
            "redis_timeout", "redis_url", "refresh_batch_size", "refresh_concurrency", "refresh_queue",
            "refresh_rate", "refresh_retries", "scan_interval", "scan_queue", "source_timeout",
            "stats_flush_interval", "stream_maxlen", "wait_timeout"]


@pytest.mark.parametrize("module", sorted(DOCUMENTED_NAMES))
def test_documented_names_import_from_their_documented_paths(module: str) -> None:
    imported = importlib.import_module(module)
    for name in DOCUMENTED_NAMES[module]:
        assert getattr(imported, name, None) is not None, f"{module}.{name}"


def test_documented_programs_are_runnable_modules() -> None:
    for module in DOCUMENTED_PROGRAMS:
        spec = importlib.util.find_spec(module)
        assert spec is not None, module
        if spec.submodule_search_locations is not None:  # a package: python -m runs its __main__
            assert importlib.util.find_spec(f"{module}.__main__") is not None, module
    done = subprocess.run([sys.executable, "-m", "cachewarm", "--help"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and "Usage: cachewarm" in done.stdout, done.stderr
    assert version("cachewarm") in subprocess.run([sys.executable, "-m", "cachewarm", "--version"],
                                                  capture_output=True, text=True, timeout=60).stdout


def test_the_console_script_and_every_command() -> None:
    from cachewarm.cli import cli

    scripts = [ep for ep in entry_points(group="console_scripts") if ep.name == "cachewarm"]
    assert [ep.value for ep in scripts] == ["cachewarm.cli:main"]
    context = click.Context(cli)
    assert cli.list_commands(context) == COMMANDS
    for name in COMMANDS:
        assert isinstance(cli.get_command(context, name), click.Command), name


def test_every_setting_keeps_its_name() -> None:
    from cachewarm import Settings

    assert sorted(Settings.model_fields) == SETTINGS


def test_the_celery_app_loads_from_its_documented_path() -> None:
    """`celery -A cachewarm.worker worker|beat`: the app is `cachewarm.worker.app` (built on first read, so in a
    process of its own), with the two tasks under their public names."""
    code = ("import cachewarm.worker as w; app = w.app; app.loader.import_default_modules(); "
            "print(app.main, sorted(n for n in app.tasks if n.startswith('cachewarm.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["cachewarm", "['cachewarm.refresh',", "'cachewarm.scan']"]
