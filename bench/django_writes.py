"""What cachewarm.contrib.django adds to a write: one model save in its own transaction, with no hook (the
baseline), with its invalidation written to the outbox, and published after commit (``on_commit`` + XADD); and
what the CACHES backend adds to a hit read.

One private redis-server; SQLite in a file under /dev/shm when there is one (so that the disk's fsync does not
drown what is measured), and a private PostgreSQL with --postgres (default durability: fsync and synchronous
commit on; the NOTIFY trigger included); each database in a child process of its own. Three identical models
differ only in their declaration (``item:{id}`` with the row's version); rounds alternate the three (the order
rotates every round) so that drift hits all alike.

A write is ``with atomic(): row.name = ...; row.version += 1; row.save()``, timed with perf_counter_ns around the
block, so the commit and the on-commit XADD are inside. "CPU us" is this thread's CPU time over the same block:
what the integration costs the writer whatever the machine's load (the wall time also waits on the database and
Redis processes, so on a busy machine it partly measures the scheduler). Round trips: the SQL statements Django
sent (its execute wrapper, in an untimed pass; BEGIN and COMMIT, the same for all three, not counted) and the
Redis pipelines, per write.

    .venv/bin/python -m bench.django_writes              # SQLite, about 30 s
    .venv/bin/python -m bench.django_writes --postgres   # SQLite then PostgreSQL
    .venv/bin/python -m bench.django_writes --quick      # a smoke run
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cachewarm.demo.redis_server import RedisServer

KINDS = ("baseline", "outbox", "on_commit")


KEYSPACE = """
[keyspaces.item]
pattern = "item:{id}"
source = "python:bench.django_writes:item_source"
ttl = 3600
"""
VALUE = {"id": 1, "name": "Item 1", "price": "80.19", "version": 3, "tags": ["kitchen", "steel", "sale"],
         "description": "A sturdy item with a description of typical length."}


def item_source(id: str) -> dict[str, Any]:
    return {**VALUE, "id": int(id)}


def configure(database: dict[str, Any], redis_url: str, tmp: Path) -> None:
    import django
    from django.conf import settings

    config = tmp / "cachewarm.toml"
    config.write_text(KEYSPACE)
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "cachewarm.contrib.django"],
        DATABASES={"default": database}, USE_TZ=True, DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        CACHEWARM={"REDIS_URL": redis_url, "CONFIG": config},
        CACHES={"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url},
                "cachewarm": {"BACKEND": "cachewarm.contrib.django.cache.CachewarmCache"}},
    )
    django.setup()


def read_overhead(rounds: int, per_round: int) -> None:
    """A hit read: cachewarm's `Cache.get`, the same key through the CACHES backend, a key of Django's through the
    backend, and Django's own RedisCache (the same value pickled). Rounds alternate the four."""
    from django.core.cache import caches

    from cachewarm.contrib.django.cache_io import shared_cache
    from cachewarm.contrib.django.conf import cachewarm_settings

    backend, django_redis, direct = caches["cachewarm"], caches["default"], shared_cache(cachewarm_settings())
    backend.set("other", VALUE)
    django_redis.set("other", VALUE)
    direct.get("item:1")
    reads: dict[str, Callable[[], Any]] = {
        "Cache.get (keyspace key)": lambda: direct.get("item:1"),
        "backend.get (keyspace key)": lambda: backend.get("item:1"),
        "backend.get (Django's key)": lambda: backend.get("other"),
        "RedisCache.get (Django's own)": lambda: django_redis.get("other"),
    }
    samples: dict[str, list[int]] = {name: [] for name in reads}
    cpu: dict[str, list[int]] = {name: [] for name in reads}
    names = list(reads)
    for round_no in range(rounds):
        for name in names[round_no % 4:] + names[:round_no % 4]:
            read = reads[name]
            for _ in range(per_round):
                started, cpu_started = time.perf_counter_ns(), time.thread_time_ns()
                read()
                samples[name].append(time.perf_counter_ns() - started)
                cpu[name].append(time.thread_time_ns() - cpu_started)
    base, base_cpu = (statistics.median(samples[names[0]]) / 1000, statistics.median(cpu[names[0]]) / 1000)
    print(f"\n{'hit read':<32}{'median us':>11}{'vs Cache.get':>14}{'CPU us':>9}{'added CPU':>11}")
    for name in names:
        median, median_cpu = statistics.median(samples[name]) / 1000, statistics.median(cpu[name]) / 1000
        print(f"{name:<32}{median:>11.1f}{median / base:>13.2f}x{median_cpu:>9.1f}{median_cpu - base_cpu:>+11.1f}")


def make_models() -> dict[str, Any]:
    """Three tables alike: one with no hook, one declared through the outbox, one after commit."""
    from django.db import models

    from cachewarm.contrib.django.invalidation import invalidate_on_change

    made: dict[str, Any] = {}
    for kind in KINDS:
        attrs = {"__module__": __name__, "name": models.CharField(max_length=100),
                 "version": models.BigIntegerField(default=1),
                 "Meta": type("Meta", (), {"app_label": "cachewarm", "db_table": f"bench_{kind}"})}
        model = type(f"Bench{kind.title().replace('_', '')}", (models.Model,), attrs)
        if kind != "baseline":
            invalidate_on_change(model, keys=["item:{id}"], version="version", via=kind)
        made[kind] = model
    return made


def prepare(models: dict[str, Any], rows: int) -> None:
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)  # the outbox table, and its trigger on PostgreSQL
    with connection.schema_editor() as editor:
        for model in models.values():
            editor.create_model(model)
    for model in models.values():
        model.objects.bulk_create([model(name=f"row {i}") for i in range(rows)])


def count_pipelines() -> list[int]:
    """Counts the Redis pipelines the on-commit delivery sends (one per commit is the design)."""
    from cachewarm.contrib.django import delivery

    calls: list[int] = []
    publish = delivery.publish_events

    def counting(events: list[dict[str, str]], **kwargs: Any) -> list[str]:
        calls.append(len(events))
        return publish(events, **kwargs)

    delivery.publish_events = counting  # type: ignore[assignment]
    return calls


def statements_per_write(models: dict[str, Any], rows: int) -> dict[str, float]:
    """SQL statements one write sends (Django's execute wrapper; BEGIN and COMMIT, the same for all, excluded).
    Counted in an untimed pass: the wrapper would add its own cost to the timings."""
    from django.db import connection

    counts: dict[str, float] = {}
    for kind in KINDS:
        rows_loaded = [models[kind].objects.get(pk=1 + i % rows) for i in range(20)]
        seen: list[str] = []
        with connection.execute_wrapper(functools.partial(_count, seen)):
            for step, row in enumerate(rows_loaded):
                _write(row, step)
        counts[kind] = len(seen) / len(rows_loaded)
    return counts


def _count(seen: list[str], execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    seen.append(sql)
    return execute(sql, params, many, context)


def _write(row: Any, step: int) -> None:
    from django.db import transaction

    with transaction.atomic():
        row.name = f"name {step}"
        row.version += 1
        row.save()


def run(models: dict[str, Any], *, rounds: int, per_round: int, rows: int) -> dict[str, dict[str, float]]:
    from cachewarm.contrib.django.models import OutboxEntry

    pipelines = count_pipelines()
    samples: dict[str, list[int]] = {kind: [] for kind in KINDS}
    cpu: dict[str, list[int]] = {kind: [] for kind in KINDS}
    redis_trips: dict[str, int] = dict.fromkeys(KINDS, 0)
    step = 0
    for round_no in range(rounds):
        order = KINDS[round_no % 3:] + KINDS[:round_no % 3]
        for kind in order:
            before = len(pipelines)
            for _ in range(per_round):
                step += 1
                row = models[kind].objects.get(pk=1 + step % rows)  # untimed: a write starts from a loaded row
                started, cpu_started = time.perf_counter_ns(), time.thread_time_ns()
                _write(row, step)
                samples[kind].append(time.perf_counter_ns() - started)
                cpu[kind].append(time.thread_time_ns() - cpu_started)
            redis_trips[kind] += len(pipelines) - before
        OutboxEntry.objects.all().delete()  # the relay's part, outside the measurement
    statements = statements_per_write(models, rows)
    out = {}
    for kind in KINDS:
        values = sorted(samples[kind])
        out[kind] = {
            "median_us": statistics.median(values) / 1000,
            "p99_us": values[min(len(values) - 1, int(len(values) * 0.99))] / 1000,
            "cpu_us": statistics.median(cpu[kind]) / 1000,
            "sql": statements[kind],
            "redis": redis_trips[kind] / len(values),
        }
    return out


def print_table(title: str, results: dict[str, dict[str, float]]) -> None:
    base, base_cpu = results["baseline"]["median_us"], results["baseline"]["cpu_us"]
    print(f"\n{title}")
    print(f"{'write':<12}{'median us':>11}{'p99 us':>10}{'added us':>10}{'CPU us':>9}{'added CPU':>11}"
          f"{'SQL stmts':>11}{'Redis trips':>13}")
    for kind in KINDS:
        r = results[kind]
        added = "" if kind == "baseline" else f"{r['median_us'] - base:+.0f}"
        added_cpu = "" if kind == "baseline" else f"{r['cpu_us'] - base_cpu:+.0f}"
        print(f"{kind:<12}{r['median_us']:>11.0f}{r['p99_us']:>10.0f}{added:>10}{r['cpu_us']:>9.0f}{added_cpu:>11}"
              f"{r['sql']:>11.2f}{r['redis']:>13.2f}")
    load = Path("/proc/loadavg")
    print(f"(load average {load.read_text().split()[0]})" if load.exists() else "")


def database_settings(url: str | None, tmp: Path) -> dict[str, Any]:
    if url is None:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp / "bench.sqlite3")}
    parts = urlsplit(url)
    return {"ENGINE": "django.db.backends.postgresql", "NAME": parts.path.lstrip("/"), "USER": parts.username,
            "HOST": parts.hostname, "PORT": str(parts.port)}


def one_database(url: str | None, redis_url: str, args: argparse.Namespace) -> None:
    """Runs in a child process: Django is configured once per process."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as tmp:
        configure(database_settings(url, Path(tmp)), redis_url, Path(tmp))
        models = make_models()
        prepare(models, args.rows)
        run(models, rounds=2, per_round=50, rows=args.rows)  # warm-up: connections, statement caches
        results = run(models, rounds=args.rounds, per_round=args.per_round, rows=args.rows)
        print_table("PostgreSQL (loopback)" if url else f"SQLite (a file in {tmp})", results)
        if not url:
            read_overhead(args.rounds, args.per_round * 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", action="store_true", help="also on a private PostgreSQL")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)  # the child's database
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.per_round = 3, 20
    if args.redis_url:  # a child: one database
        one_database(args.database_url or None, args.redis_url, args)
        return 0
    return _parent(args)


def _parent(args: argparse.Namespace) -> int:
    import subprocess

    passed = ["--rounds", str(args.rounds), "--per-round", str(args.per_round), "--rows", str(args.rows)]
    with RedisServer() as server:
        child: Callable[[str], int] = lambda url: subprocess.call(  # noqa: E731
            [sys.executable, "-m", "bench.django_writes", *passed, "--redis-url", server.url(0),
             "--database-url", url])
        status = child("")
        if args.postgres and status == 0:
            from tests.support.postgres import PostgresServer

            with PostgresServer(options={}) as postgres:  # default durability: fsync and synchronous commit on
                status = child(postgres.create_database("bench"))
    return status


if __name__ == "__main__":
    sys.exit(main())
