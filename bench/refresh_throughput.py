"""Refresh-throughput benchmark: how fast do the workers refresh a large set of keys that are all due at once?

--keys keys (default 20,000) are pinned and missing, so one scan finds them all due; the source (a child process)
answers after --latency (default 50 ms); refresh concurrency --concurrency (default 100) in total. The physical
limit is concurrency / latency (2,000 keys/s); the goal is 1,500 keys/s end to end through Celery.

Rows, all in this one run against the same redis-server and source:
  transport: httpx default   refresh_batch in this process over httpx's default transport (no Celery)
  transport: httpx-aiohttp   the same over httpx_aiohttp.AiohttpTransport (what the workers use)
  celery: one task per key   the baseline: every key its own Celery task (threads pool, --concurrency threads),
                             each task running the same refresh path for its one key
  celery: cachewarm batched  `celery -A cachewarm.worker worker -B` (prefork, --processes processes sharing the
                             concurrency, beat scanning every second): the scan claims the due keys and enqueues
                             batches of --batch keys, each process running up to MAX_IN_FLIGHT (tasks/refresh.py)
                             batches at once; measured from the first scan until every key is written

    PYTHONPATH=. python bench/refresh_throughput.py [--keys 20000] [--quick] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx
import redis
from celery import Celery

from bench.common import print_table
from cachewarm.connections import async_client
from cachewarm.demo.redis_server import RedisServer
from cachewarm.demo.source_process import SourceProcess
from cachewarm.keys import KeyLayout
from cachewarm.refresh import RefreshContext, refresh_batch
from cachewarm.refresh import stats as refresh_stats
from cachewarm.refresh_engine import make_http_client
from cachewarm.settings import Settings

L = KeyLayout()
GOAL = 1500.0

# ---- the baseline's Celery app: one task per key, over the same refresh path --------------------------------
baseline_app = Celery("bench-baseline", broker=os.environ.get("CACHEWARM_BROKER_URL", "redis://127.0.0.1:6379/1"))
baseline_app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True,
                         task_acks_late=True, worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True,
                         worker_hijack_root_logger=False)


@baseline_app.task(name="bench.refresh_one", ignore_result=True)  # type: ignore[untyped-decorator]
def refresh_one(key: str) -> None:
    from cachewarm.refresh_engine import get_engine

    get_engine().submit([key]).result(60)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_config(directory: Path, source_url: str) -> Path:
    path = directory / "cachewarm.toml"
    path.write_text(f'[keyspaces.product]\npattern = "product:{{id}}"\nsource = "{source_url}/products/{{id}}"\n'
                    "ttl = 600\nrefresh_ahead = 60\n")
    return path


def keys_of(n: int) -> list[str]:
    return [f"product:{i}" for i in range(n)]


def wait_written(client: redis.Redis, n: int, timeout: float) -> float:
    """Seconds until n keys were refreshed (refresh:stats refreshed:product), polled every 20 ms."""
    start = time.monotonic()
    while True:
        done = int(client.hget(L.refresh_stats, "refreshed:product") or 0)  # type: ignore[arg-type]
        if done >= n:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"only {done} of {n} keys refreshed after {timeout:g} s")
        time.sleep(0.02)


def transport_row(settings: Settings, n: int, concurrency: int, aiohttp: bool) -> float:
    async def go() -> float:
        http = (make_http_client(settings, concurrency=concurrency) if aiohttp else
                httpx.AsyncClient(timeout=settings.source_timeout,
                                  limits=httpx.Limits(max_connections=concurrency,
                                                      max_keepalive_connections=concurrency)))
        ctx = RefreshContext(settings, async_client(settings.redis_url, timeout=10), http, "bench")
        try:
            await refresh_batch(ctx, keys_of(min(200, n)))   # warm the pool
            keys = keys_of(n)
            start = time.perf_counter()
            for i in range(0, n, 2000):
                await refresh_batch(ctx, keys[i:i + 2000], force=True)
            return n / (time.perf_counter() - start)
        finally:
            await http.aclose()
            await ctx.redis.aclose()

    return asyncio.run(go())


def celery_row(env: dict[str, str], args: list[str], client: redis.Redis, n: int, start_work: Callable[[], None],
               app: Celery, workdir: Path, name: str) -> float:
    with open(workdir / f"{name}.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "celery", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} worker did not start: see {workdir / (name + '.log')}")
        start = time.monotonic()
        start_work()
        wait_written(client, n, timeout=max(120.0, n / 100))
        return n / (time.monotonic() - start)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--transport-keys", type=int, default=4000)
    parser.add_argument("--quick", action="store_true", help="2,000 keys")
    parser.add_argument("--systems", default="transport,per-key,batched",
                        help="comma-separated subset of: transport, per-key, batched")
    parser.add_argument("--keep", type=Path, default=None, help="copy the workers' logs into this directory")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.keys = min(args.keys, 2000)
        args.transport_keys = min(args.transport_keys, 2000)
    limit = args.concurrency / args.latency
    rows: list[list[str]] = []

    def row(name: str, rate: float) -> None:
        log(f"{name}: {rate:,.0f} keys/s")
        rows.append([name, f"{rate:,.0f}", f"{rate / limit * 100:.0f}%", "Y" if rate >= GOAL else "n"])

    with (RedisServer() as server, SourceProcess(latency=args.latency, items=max(100_000, args.keys)) as source,
          tempfile.TemporaryDirectory(prefix="cachewarm-bench-") as tmp):
        workdir = Path(tmp)
        config = write_config(workdir, source.url)
        client = redis.Redis.from_url(server.url(0))
        settings = Settings.load(redis_url=server.url(0), config=config, refresh_concurrency=args.concurrency,
                                 source_timeout=30.0)
        systems = {name.strip() for name in args.systems.split(",")}
        for aiohttp in (False, True) if "transport" in systems else ():
            client.flushall()
            name = "transport: httpx-aiohttp" if aiohttp else "transport: httpx default"
            log(f"{name}: {args.transport_keys} keys, concurrency {args.concurrency}")
            row(name, transport_row(settings, args.transport_keys, args.concurrency, aiohttp))

        env = {**os.environ, "CACHEWARM_REDIS_URL": server.url(0), "CACHEWARM_BROKER_URL": server.url(1),
               "CACHEWARM_CONFIG": str(config), "CACHEWARM_METRICS_PORT": "0", "CACHEWARM_SOURCE_TIMEOUT": "30",
               "CACHEWARM_REFRESH_BATCH_SIZE": str(args.batch),
               "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                          os.environ.get("PYTHONPATH")) if p)}
        keys = keys_of(args.keys)
        loglevel = "INFO" if args.keep is not None else "WARNING"

        # baseline: one task per key
        client.flushall()
        baseline_app.conf.broker_url = server.url(1)
        log(f"celery: one task per key: {args.keys} keys, threads pool x {args.concurrency}")
        base_env = {**env, "CACHEWARM_REFRESH_CONCURRENCY": str(args.concurrency)}

        def send_per_key() -> None:
            with baseline_app.producer_or_acquire() as producer:
                for key in keys:
                    refresh_one.apply_async(args=[key], producer=producer)

        if "per-key" in systems:
            row("celery: one task per key", celery_row(
                base_env, ["-A", "bench.refresh_throughput:baseline_app", "worker", "--pool", "threads",
                           "--concurrency", str(args.concurrency), "--loglevel", "WARNING", "--without-gossip",
                           "--without-mingle"], client, args.keys, send_per_key, baseline_app, workdir, "baseline"))

        # cachewarm: one scan, batched refresh tasks
        client.flushall()
        per_process = max(1, args.concurrency // args.processes)
        cw_env = {**env, "CACHEWARM_REFRESH_CONCURRENCY": str(per_process), "CACHEWARM_SCAN_INTERVAL": "1"}
        from cachewarm.tasks.refresh import MAX_IN_FLIGHT
        from cachewarm.worker.celery_app import create_app

        cw_app = create_app(Settings.load(redis_url=server.url(0), broker_url=server.url(1), config=config))

        def start_batched() -> None:
            client.sadd(L.pinned("product"), *keys)      # all due at once (missing), from now on
            cw_app.send_task("cachewarm.scan")

        log(f"celery: cachewarm batched: {args.keys} keys, {args.processes} processes x {per_process}")
        if "batched" in systems:
            row("celery: cachewarm batched", celery_row(
                cw_env, ["-A", "cachewarm.worker", "worker", "-B", "-s", str(workdir / "beat-schedule"), "--pool",
                         "prefork", "--concurrency", str(args.processes), "--loglevel", loglevel,
                         "--without-gossip", "--without-mingle"],
                client, args.keys, start_batched, cw_app, workdir, "cachewarm"))
            print(f"refresh:stats after the batched run: {refresh_stats(client, L)}", file=sys.stderr)
        client.close()
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            for path in workdir.glob("*.log"):
                (args.keep / path.name).write_bytes(path.read_bytes())

    title = (f"refresh_throughput: {args.keys:,} keys due at once, source {args.latency * 1000:g} ms, "
             f"concurrency {args.concurrency} (physical limit {limit:,.0f} keys/s, goal {GOAL:,.0f})")
    markdown = print_table(title, ["system", "keys/s", "of limit", f"goal >= {GOAL:,.0f}"], rows, notes=[
        f"transport rows: {args.transport_keys:,} keys through refresh_batch in one process, no Celery",
        f"cachewarm batched: {args.processes} prefork processes x {per_process} concurrent fetches, "
        f"batches of {args.batch}, up to {MAX_IN_FLIGHT} batches in flight per process; "
        f"one task per key: threads pool of {args.concurrency}",
    ])
    if args.markdown:
        print()
        print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
