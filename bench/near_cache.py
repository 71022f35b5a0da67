"""The near cache (issue 14): what a local hit costs, how fast Redis's push drops a copy, what an entry weighs,
what four reader processes gain, and the correctness load at full length. One run, one private redis-server.

    .venv/bin/python -m bench.near_cache                  # about 4 minutes (the correctness load runs 60 s x 4)
    .venv/bin/python -m bench.near_cache --quick          # a smoke run

1. Hit cost, rounds interleaved (bench/read_path.py's method): raw GET + json.loads, `Cache.get` on a Redis hit,
   `Cache.get` on a local hit; the same for asyncio. Goals: local hit median <= 3 µs and >= 40x faster than raw.
2. Push to drop: a second client SETs a key this process holds locally; the time until a read no longer serves the
   copy (the read drains the link), from the SET's acknowledgement. Goal p99 <= 2 ms.
3. Memory per local entry (tracemalloc, 10,000 entries of the read-path value).
4. Four reader processes, Zipf(1.1) over 10,000 keys, as fast as they go, local copies off then on (same keys, same
   source; no writes): reads/s and source requests. Goal: reads/s >= 5x with the same source load.
5. The correctness load (tests/support/near_load.py) for --correctness-seconds: a writer at 1,000 writes/s, four
   readers: stale reads (older than what Redis had acknowledged 5 ms before the read began) with pushes, with
   pushes ignored (must be > 0), with tracking connections killed every 0.7 s, with Redis restarted. Goal: 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

from cachewarm import AsyncCache, Cache, Settings
from cachewarm.demo.redis_server import RedisServer
from cachewarm.near.store import LocalStore

from .common import ZipfSampler, percentile, print_table
from .read_path import VALUE, interleave_async, interleave_sync

KEYSPACES = """
[keyspaces.product]
pattern = "product:{id}"
source = "python:bench.near_cache:load"
ttl = 3600

[keyspaces.local]
pattern = "local:{id}"
source = "python:bench.near_cache:load"
ttl = 3600
local = true
local_max_entries = 20000
"""


SOURCE_CALLS = [0]  # source requests made in this process


def load(id: str) -> dict[str, Any]:
    SOURCE_CALLS[0] += 1
    return {**VALUE, "id": id}


def _row(name: str, samples: list[float], base: list[float]) -> list[str]:
    med, p99 = statistics.median(samples) / 1000, percentile(samples, 99) / 1000
    speed = statistics.median(base) / statistics.median(samples)
    return [name, f"{med:.2f}", f"{p99:.2f}", f"{speed:.1f}x"]


def hit_cost(url: str, config: Path, rounds: int, per_round: int) -> list[list[str]]:
    settings = Settings.load(redis_url=url, config=config)
    raw = redis.Redis.from_url(url, socket_timeout=settings.redis_timeout)
    raw.set("bench:raw", json.dumps(load("1"), separators=(",", ":")))
    rows = []
    with Cache(settings=settings) as cache:
        cache.get("product:1")
        cache.get("local:1")
        cache.get("local:1")  # the second read keeps the copy
        assert cache.near_figures()["local"]["entries"] == 1
        results = interleave_sync({
            "raw": lambda: json.loads(raw.get("bench:raw")),  # type: ignore[arg-type]
            "redis": lambda: cache.get("product:1"),
            "local": lambda: cache.get("local:1"),
        }, rounds, per_round)
        print("near figures after the sync rounds:", cache.near_figures())
    rows += [_row("raw GET + json.loads (sync)", results["raw"], results["raw"]),
             _row("Cache.get, Redis hit", results["redis"], results["raw"]),
             _row("Cache.get, local hit", results["local"], results["raw"])]

    async def run_async() -> dict[str, list[float]]:
        araw = redis.asyncio.Redis.from_url(url, socket_timeout=settings.redis_timeout)
        async with AsyncCache(settings=settings) as acache:
            await acache.get("product:1")
            await acache.get("local:1")
            await acache.get("local:1")

            async def araw_pair() -> Any:
                return json.loads(await araw.get("bench:raw"))

            out = await interleave_async({"raw": araw_pair, "redis": lambda: acache.get("product:1"),
                                          "local": lambda: acache.get("local:1")}, rounds, per_round)
        await araw.aclose()
        return out

    aresults = asyncio.run(run_async())
    rows += [_row("raw GET + json.loads (async)", aresults["raw"], aresults["raw"]),
             _row("AsyncCache.get, Redis hit", aresults["redis"], aresults["raw"]),
             _row("AsyncCache.get, local hit", aresults["local"], aresults["raw"])]
    raw.close()
    return rows


def push_to_drop(url: str, config: Path, trials: int) -> tuple[float, float, float]:
    """Median, p99 and max seconds from a SET's acknowledgement to the local copy no longer being served."""
    settings = Settings.load(redis_url=url, config=config)
    writer = redis.Redis.from_url(url)
    delays = []
    with Cache(settings=settings) as cache:
        near = cache._near
        assert near is not None
        value_key = cache.layout.value("local:push")
        cache.get("local:push")
        for _ in range(trials):
            while near.serve("local", value_key) is None:  # until the copy is back (a Redis hit keeps it)
                cache.get("local:push")
            writer.set(value_key, writer.get(value_key) or b"")  # the same bytes: a change all the same
            acked = time.perf_counter()
            while near.serve("local", value_key) is not None:
                pass
            delays.append(time.perf_counter() - acked)
    writer.close()
    delays.sort()
    return statistics.median(delays), percentile(delays, 99, ordered=True), delays[-1]


def bytes_per_entry(count: int = 10_000) -> float:
    raw = json.dumps(VALUE, separators=(",", ":")).encode()
    store = LocalStore(max_entries=count, max_bytes=1 << 40)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        key = f"cachewarm:v:local:{i}"
        store.put(key, json.loads(raw), fetched_ms=0, expires_ms=10**15, raw_size=len(raw))
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / count


def reader_main(args: argparse.Namespace) -> None:
    """One reader process of part 4: reads as fast as it can, prints its count as JSON."""
    settings = Settings.load(redis_url=args.redis_url, config=Path(args.config))
    sampler = ZipfSampler(args.keys, 1.1, seed=args.seed)
    prefix = "local" if args.local else "product"
    with Cache(settings=settings) as cache:
        for i in range(args.keys):  # not timed: every key in Redis (and its copy kept, when local)
            cache.get(f"{prefix}:{i}")
        reads = 0
        started = time.monotonic()
        deadline = started + args.reader_seconds
        while time.monotonic() < deadline:
            for _ in range(100):
                cache.get(f"{prefix}:{sampler.sample()}")
            reads += 100
        elapsed = time.monotonic() - started
        figures = cache.near_figures()
    # The keyspaces name this module as bench.near_cache; run as a script it is also __main__: count in the former.
    from bench import near_cache as source_module

    print(json.dumps({"reads": reads, "elapsed": elapsed, "figures": figures,
                      "source": source_module.SOURCE_CALLS[0]}))


def readers(url: str, config: Path, *, local: bool, seconds: float, keys: int) -> tuple[float, int]:
    """Reads/s of four reader processes, and the source requests they made."""
    stats = redis.Redis.from_url(url)
    stats.flushdb()
    procs = [subprocess.Popen([sys.executable, "-m", "bench.near_cache", "--reader", "--redis-url", url,
                               "--config", str(config), "--keys", str(keys), "--reader-seconds", str(seconds),
                               "--seed", str(n + 1), *(["--local"] if local else [])],
                              stdout=subprocess.PIPE, text=True) for n in range(4)]
    outs = [json.loads(p.communicate(timeout=seconds + 300)[0]) for p in procs]
    rate = sum(o["reads"] / o["elapsed"] for o in outs)
    stats.close()
    return rate, sum(o["source"] for o in outs)


def correctness(seconds: float) -> list[list[str]]:
    from tests.support.near_load import kill_tracking_links, restart_redis, run_load, stale_reads

    rows = []
    for name in ("pushes on", "pushes ignored (must be stale)", "tracking connections killed", "redis restarted"):
        with tempfile.TemporaryDirectory() as tmp, RedisServer() as server:
            losses: list[float] = []

            def during(name: str = name, server: RedisServer = server, losses: list[float] = losses) -> None:
                if name == "tracking connections killed":
                    kill_tracking_links(server.url(0), seconds - 1)
                elif name == "redis restarted":
                    restart_redis(server, seconds / 3, losses)

            writes, reads, figures = run_load(server.url(0), Path(tmp), seconds=seconds, keys=200,
                                              no_push=name.startswith("pushes ignored"), during=during)
            hits = sum(f["near"]["hits"] for f in figures)
            resets = sum(f["_link"]["resets"] for f in figures)
            bad = stale_reads(writes, reads, losses=losses, ignore_missing=name == "redis restarted")
            rows.append([name, f"{len(writes) / (seconds + 2):,.0f}", f"{len(reads):,}", f"{hits:,}", str(resets),
                         f"{len(bad):,}"])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--reader-seconds", type=float, default=10.0)
    parser.add_argument("--correctness-seconds", type=float, default=60.0)
    parser.add_argument("--keys", type=int, default=10_000)
    # a reader process of part 4
    parser.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--local", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reader:
        reader_main(args)
        return
    if args.quick:
        args.rounds, args.reader_seconds, args.correctness_seconds, args.keys = 40, 3.0, 6.0, 2_000
    print(f"python {sys.version.split()[0]}, redis-py {redis.__version__}")
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as server:
        config = Path(tmp) / "cachewarm.toml"
        config.write_text(KEYSPACES)
        url = server.url(0)
        print_table(f"1. hit cost ({args.rounds} interleaved rounds x {args.per_round} reads)",
                    ["read", "median µs", "p99 µs", "speed vs raw"],
                    hit_cost(url, config, args.rounds, args.per_round),
                    notes=["goal: local hit median <= 3 µs and >= 40x the raw GET + json.loads"])
        med, p99, worst = push_to_drop(url, config, 300 if args.quick else 2000)
        print_table("2. push to drop (from the SET's acknowledgement to the copy no longer served)",
                    ["median ms", "p99 ms", "max ms"], [[f"{med * 1000:.3f}", f"{p99 * 1000:.3f}",
                                                         f"{worst * 1000:.3f}"]],
                    notes=["goal: p99 <= 2 ms"])
        print_table("3. memory per local entry (tracemalloc, 10,000 entries of the read-path value)",
                    ["bytes per entry"], [[f"{bytes_per_entry():,.0f}"]])
        off = readers(url, config, local=False, seconds=args.reader_seconds, keys=args.keys)
        on = readers(url, config, local=True, seconds=args.reader_seconds, keys=args.keys)
        print_table(f"4. four reader processes, Zipf(1.1) over {args.keys:,} keys, {args.reader_seconds:g} s each",
                    ["local copies", "reads/s", "source requests", "ratio"],
                    [["off", f"{off[0]:,.0f}", f"{off[1]:,}", "1.00x"],
                     ["on", f"{on[0]:,.0f}", f"{on[1]:,}", f"{on[0] / off[0]:.2f}x"]],
                    notes=["goal: reads/s >= 5x with the same source load"])
    print_table(f"5. correctness load, {args.correctness_seconds:g} s each (writer 1,000/s asked, 4 readers)",
                ["run", "writes/s", "reads", "local hits", "link resets", "stale reads"],
                correctness(args.correctness_seconds),
                notes=["goal: 0 stale reads, except with pushes ignored (proves the check bites)"])


if __name__ == "__main__":
    main()
