"""Read-path overhead: `Cache.get` on a hit against a raw redis-py `GET` + `json.loads` of the same value.

One process, one run, one private redis-server: rounds alternate the raw pair and the cachewarm read (the order
swaps every round, so drift in the machine's speed hits both alike), with hit/miss counting and hot-key access
tracking on, as in production. The async half does the same for `AsyncCache.get` against `redis.asyncio`.

    .venv/bin/python -m bench.read_path            # about 15 s
    .venv/bin/python -m bench.read_path --quick    # a smoke run

    .venv/bin/python -m bench.read_path --topology cluster   # a private 3-master Redis Cluster (raw: RedisCluster)
    .venv/bin/python -m bench.read_path --topology both      # both, then side by side

Goal: `Cache.get` on a hit within 1.10x of the raw pair (median), on either topology. Accounting is buffered
in-process and flushed every `stats_flush_interval` (0.25 s) in one script call, so a hit is one GET (see
cachewarm/read/access.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

from bench.common import percentile
from bench.topology import (
    CacheServers,
    Figure,
    add_topology_arg,
    cache_servers,
    load_average,
    side_by_side,
    topologies_of,
)
from cachewarm import AsyncCache, Cache, Settings

KEY = "product:1"
VALUE: dict[str, Any] = {
    "id": "1", "name": "Product 1", "price": 80.19, "version": 3, "currency": "EUR", "stock": 17,
    "tags": ["kitchen", "steel", "sale"], "description": "A sturdy product with a description of typical length.",
}
KEYSPACES = """
[keyspaces.product]
pattern = "product:{id}"
source = "python:bench.read_path:load"
ttl = 3600
"""


def load(id: str) -> dict[str, Any]:
    return {**VALUE, "id": id}


def time_sync(fn: Callable[[], Any], n: int, out: list[float]) -> None:
    clock = time.perf_counter_ns
    for _ in range(n):
        started = clock()
        fn()
        out.append(clock() - started)


async def time_async(fn: Callable[[], Awaitable[Any]], n: int, out: list[float]) -> None:
    clock = time.perf_counter_ns
    for _ in range(n):
        started = clock()
        await fn()
        out.append(clock() - started)


def interleave_sync(pairs: dict[str, Callable[[], Any]], rounds: int, per_round: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in pairs}
    names = list(pairs)
    for fn in pairs.values():  # warm up connections, plans and scripts
        time_sync(fn, 200, [])
    for r in range(rounds):
        if r % 100 == 0:
            gc.collect()
        for name in names if r % 2 == 0 else reversed(names):
            time_sync(pairs[name], per_round, results[name])
    return results


async def interleave_async(pairs: dict[str, Callable[[], Awaitable[Any]]], rounds: int,
                           per_round: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in pairs}
    names = list(pairs)
    for fn in pairs.values():
        await time_async(fn, 200, [])
    for r in range(rounds):
        if r % 100 == 0:
            gc.collect()
        for name in names if r % 2 == 0 else reversed(names):
            await time_async(pairs[name], per_round, results[name])
    return results


def row(name: str, samples: list[float], base: list[float] | None) -> str:
    med, p99 = statistics.median(samples) / 1000, percentile(samples, 99) / 1000
    if base is None:
        ratio = "1.00x / 1.00x"
    else:
        ratio = (f"{med / (statistics.median(base) / 1000):.2f}x / "
                 f"{p99 / (percentile(base, 99) / 1000):.2f}x")
    return f"| {name:<50} | {med:>10.1f} | {p99:>9.1f} | {ratio:>15} |"


def report(title: str, results: dict[str, list[float]], base_name: str) -> None:
    print(f"\n{title}")
    print(f"| {'read':<50} | {'median µs':>10} | {'p99 µs':>9} | {'ratio med/p99':>15} |")
    print(f"|{'-' * 52}|{'-' * 11}:|{'-' * 10}:|{'-' * 16}:|")
    base = results[base_name]
    for name, samples in results.items():
        print(row(name, samples, None if name == base_name else base))


def run(servers: CacheServers, rounds: int, per_round: int) -> dict[str, float]:
    """The sync and async tables of one topology; returns the medians (µs) and the sync ratio."""
    raw_name = "raw RedisCluster GET + json.loads" if servers.cluster else "raw redis-py GET + json.loads"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "cachewarm.toml"
        config.write_text(KEYSPACES)
        settings = Settings.load(redis_url=servers.redis_url, config=config, redis_cluster=servers.cluster)
        raw_client = servers.client()
        raw_key = "bench:raw:" + KEY
        raw_client.set(raw_key, json.dumps(load("1"), separators=(",", ":")))

        with Cache(settings=settings) as cache:
            cache.get(KEY)  # the miss that stores it; every timed read below is a hit
            assert cache.lookup(KEY).hit

            def raw_pair() -> Any:
                return json.loads(raw_client.get(raw_key))  # type: ignore[arg-type]

            # The read path sets a short socket timeout (CACHEWARM_REDIS_TIMEOUT); with any timeout set, Python
            # polls the socket before each recv. This row is the raw pair paying the same price.
            timed_client = servers.client(socket_timeout=settings.redis_timeout)

            def timed_pair() -> Any:
                return json.loads(timed_client.get(raw_key))  # type: ignore[arg-type]

            sync_results = interleave_sync({
                raw_name: raw_pair,
                f"raw GET + json.loads, socket_timeout={settings.redis_timeout}": timed_pair,
                "Cache.get (hit, counting + access tracking)": lambda: cache.get(KEY),
            }, rounds, per_round)
            assert cache.flush_stats()
            hits = int(float(raw_client.hget(settings.key_prefix + "stats", "hit:product") or 0))
        report(f"{servers.topology} sync: {rounds} interleaved rounds x {per_round} reads each", sync_results,
               raw_name)

        async def run_async() -> dict[str, list[float]]:
            araw = servers.async_client()
            async with AsyncCache(settings=settings) as acache:
                await acache.get(KEY)

                async def araw_pair() -> Any:
                    return json.loads(await araw.get(raw_key))  # type: ignore[arg-type]

                results = await interleave_async({
                    "raw redis.asyncio GET + json.loads": araw_pair,
                    "AsyncCache.get (hit, counting + access tracking)": lambda: acache.get(KEY),
                }, rounds, per_round)
            await araw.aclose()
            return results

        async_results = asyncio.run(run_async())
        report(f"{servers.topology} async: {rounds} interleaved rounds x {per_round} reads each", async_results,
               "raw redis.asyncio GET + json.loads")
        raw_client.close()

    cache_row = "Cache.get (hit, counting + access tracking)"
    expected = len(sync_results[cache_row]) + 200
    print(f"\nhits counted in Redis for the sync client: {hits} (expected {expected})")
    medians = {
        "raw GET + json.loads, median µs": statistics.median(sync_results[raw_name]) / 1000,
        "Cache.get hit, median µs": statistics.median(sync_results[cache_row]) / 1000,
        "raw asyncio GET + json.loads, median µs":
            statistics.median(async_results["raw redis.asyncio GET + json.loads"]) / 1000,
        "AsyncCache.get hit, median µs":
            statistics.median(async_results["AsyncCache.get (hit, counting + access tracking)"]) / 1000,
    }
    medians["Cache.get / raw GET (median)"] = (medians["Cache.get hit, median µs"]
                                               / medians["raw GET + json.loads, median µs"])
    medians["AsyncCache.get / raw GET (median)"] = (medians["AsyncCache.get hit, median µs"]
                                                    / medians["raw asyncio GET + json.loads, median µs"])
    return medians


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis-url", help="use this Redis instead of starting a private redis-server")
    parser.add_argument("--rounds", type=int, default=800)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="40 rounds x 50 reads")
    add_topology_arg(parser)
    args = parser.parse_args(argv)
    rounds, per_round = (40, 50) if args.quick else (args.rounds, args.per_round)
    print(f"python {sys.version.split()[0]}, redis-py {redis.__version__}, {load_average()}")
    results: dict[str, dict[str, float]] = {}
    if args.redis_url:
        results["standalone"] = run(CacheServers("standalone", args.redis_url, args.redis_url), rounds, per_round)
    else:
        for topology in topologies_of(args):
            with cache_servers(topology) as servers:
                results[topology] = run(servers, rounds, per_round)
    for topology, figures in results.items():
        ratio = figures["Cache.get / raw GET (median)"]
        verdict = "within" if ratio <= 1.10 else "OVER"
        print(f"{topology}: Cache.get hit / raw GET+loads (median): {ratio:.3f}x ({verdict} the 1.10x goal)")
    if len(results) > 1:
        side_by_side("read_path: standalone and cluster", [Figure(name) for name in results["standalone"]], results,
                     notes=["the goal (<= 1.10x) is Cache.get against the raw GET of its own topology: the "
                            "`/ raw GET` rows; cluster/standalone is the cost of the cluster itself",
                            f"after the runs: {load_average()}"])


if __name__ == "__main__":
    main()
