"""Hit-ratio benchmark: how well does each system keep the hot keys warm, and at what cost to the source?

Zipf (s = 1.1) reads over --keys keys (default 10,000) from --threads reader threads (default 4) for --seconds
(default 60) after a --warmup (default 10 s, not measured, same for every system), TTL 5 s, refresh ahead 1 s,
source latency 50 ms over HTTP (`cachewarm.demo.source` in a child process). Every system runs on its own
freshly flushed database of one private redis-server, against the same source, one after the other.

Columns:
  hit% all / hit% hot        hits over all reads / over reads of the --hot hottest keys (ranks 0..hot-1), as
                             reported by each system's read (a read that waited for the source is a miss)
  p50 / p99                  read latency over all reads; p99/raw and hot p99/raw divide the p99 over all
                             reads / over hot-key reads by a raw redis-py GET's p99 measured in this run with
                             the same number of threads
  src req/s                  source requests during the measured window / its length
  req/hot key/period         source requests for the hot ids / hot / (window / (ttl - refresh_ahead)): 1.0 is
                             what keeping every hot key always fresh costs; more means duplicate fetches
Goals: hot hit ratio >= 99.5 %, read p99 <= 3x raw GET p99, req/hot key/period <= 1.05.

    PYTHONPATH=. python bench/hit_ratio.py [--quick] [--systems classic,locked] [--markdown]
        [--topology standalone|cluster|both]

`--topology cluster` runs cachewarm alone (the baselines are single-server clients) with the cache on a private
3-master Redis Cluster and a standalone broker, the raw GET reference through a RedisCluster; `both` runs the
two and prints cachewarm's figures side by side (goal: the hit ratios unchanged within noise).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

if __package__ in (None, ""):  # run as a script: make `bench` and `cachewarm` importable from the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import redis

from bench.baselines import CashewsEarly, ClassicCacheAside, LockedCacheAside, System, product_path
from bench.common import (
    LatencyStats,
    ReadRecords,
    ZipfSampler,
    add_common_args,
    format_ms,
    measure_raw_get,
    parse_common_args,
    print_table,
    run_readers,
)
from bench.topology import (
    CacheServers,
    Figure,
    add_topology_arg,
    cache_servers,
    load_average,
    side_by_side,
    topologies_of,
)
from cachewarm import Cache
from cachewarm.demo.source_process import SourceProcess

# The systems, in the order they run; `--systems` picks a subset by name. The first one is the baseline of the
# "src/base" ratio column.
#
# HOOK for the candidate: the cachewarm system is added here as one more entry, e.g.
#     SYSTEMS.append(("cachewarm", CachewarmWorkers))
# where CachewarmWorkers implements bench.baselines.System (setup starts its workers against the given Redis
# URL and source URL, read goes through cachewarm's Cache and reports its own hit flag, close stops the
# workers).


class CachewarmWorkers:
    """cachewarm: reads through `Cache` (its own hit flag), and a `celery -A cachewarm.worker worker -B` child
    process (prefork, one process per core) that scans every 0.25 s and refreshes hot keys before they expire."""

    name: ClassVar[str] = "cachewarm"
    SCAN_INTERVAL = 0.25
    HALF_LIFE = 60.0      # the defaults; readers and workers must agree: it is the unit of the hot:S scores
    THRESHOLD = 1.0

    def __init__(self, servers: CacheServers | None = None) -> None:
        self._servers = servers  # a cluster's; standalone: the database given to setup, the broker in db 1
        self._cache: Cache | None = None
        self._worker: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def setup(self, redis_url: str, source_url: str, ttl: float, refresh_ahead: float) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="cachewarm-hit-ratio-")
        tmp = Path(self._tmp.name)
        config = tmp / "cachewarm.toml"
        config.write_text(f'[keyspaces.product]\npattern = "product:{{id}}"\nsource = "{source_url}/products/{{id}}"'
                          f"\nttl = {ttl}\nrefresh_ahead = {refresh_ahead}\n")
        cache = self._servers or CacheServers("standalone", redis_url, redis_url.rsplit("/", 1)[0] + "/1")
        settings = cache.settings(config=config, scan_interval=self.SCAN_INTERVAL, hot_half_life=self.HALF_LIFE,
                                  hot_threshold=self.THRESHOLD)
        env = {**os.environ, **cache.env(), "CACHEWARM_CONFIG": str(config),
               "CACHEWARM_SCAN_INTERVAL": str(self.SCAN_INTERVAL),
               "CACHEWARM_HOT_HALF_LIFE": str(self.HALF_LIFE), "CACHEWARM_HOT_THRESHOLD": str(self.THRESHOLD),
               "CACHEWARM_METRICS_PORT": "0"}
        client = redis.Redis.from_url(cache.broker_url)
        try:
            client.flushdb()
        finally:
            client.close()
        log_file = open(tmp / "worker.log", "wb")  # noqa: SIM115 - handed to the child
        self._worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "cachewarm.worker", "worker", "-B", "-s", str(tmp / "beat"),
             "--loglevel", "WARNING", "--without-gossip", "--without-mingle"],
            env=env, cwd=tmp, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        log_file.close()
        self._cache = Cache(settings=settings)
        self._wait_for_scans(cache)

    def _wait_for_scans(self, cache: CacheServers) -> None:
        client = cache.client()
        deadline = time.monotonic() + 60
        try:
            while not client.hexists("cachewarm:refresh:stats", "hot_keys:product"):
                if time.monotonic() > deadline or (self._worker and self._worker.poll() is not None):
                    raise RuntimeError("cachewarm worker did not start scanning")
                time.sleep(0.1)
        finally:
            client.close()

    def read(self, key_id: int) -> tuple[Any, bool]:
        assert self._cache is not None
        found = self._cache.lookup(f"product:{key_id}")
        return found.value, found.hit

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        if self._worker is not None:
            if self._worker.poll() is None:
                os.killpg(self._worker.pid, signal.SIGTERM)
                try:
                    self._worker.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(self._worker.pid, signal.SIGKILL)
                    self._worker.wait()
            self._worker = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


SYSTEMS: list[tuple[str, Callable[[], System]]] = [
    ("classic", ClassicCacheAside),
    ("locked", LockedCacheAside),
    ("cashews-early", CashewsEarly),
    ("cachewarm", CachewarmWorkers),
]

# Database numbers: 0 for the raw-GET reference, 1 left free (the default Celery broker database of a
# cachewarm sharing the server), the systems from 2 on.
FIRST_SYSTEM_DB = 2

GOAL_HOT_HIT = 0.995
GOAL_P99_RATIO = 3.0
GOAL_REQ_PER_PERIOD = 1.05


@dataclass
class Result:
    name: str
    records: ReadRecords
    window: float  # seconds between the source-stats reset and the stats snapshot
    source_requests: int
    hot_requests: int


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_system(name: str, factory: Callable[[], System], *, redis_url: str, source: SourceProcess,
               args: argparse.Namespace, servers: CacheServers | None = None) -> Result:
    if servers is not None and servers.cluster:
        servers.flush()
    else:
        client = redis.Redis.from_url(redis_url)
        try:
            client.flushdb()
        finally:
            client.close()
    source.reset_stats()
    system = factory()
    system.setup(redis_url, source.url, args.ttl, args.refresh_ahead)
    window_start = [time.monotonic()]

    def measure_start() -> None:
        source.reset_stats()
        window_start[0] = time.monotonic()

    try:
        sampler = ZipfSampler(args.keys, args.s, args.seed)
        records = run_readers(system.read, args.threads, args.seconds, sampler,
                              warmup=args.warmup, on_measure_start=measure_start)
        stats: dict[str, Any] = source.stats()
        window = time.monotonic() - window_start[0]
    finally:
        system.close()
    by_path: dict[str, int] = stats.get("by_path", {})
    hot = min(args.hot, args.keys)
    hot_requests = sum(int(by_path.get(product_path(i), 0)) for i in range(hot))
    return Result(name, records, window, int(stats["requests"]), hot_requests)


def ratio(value: float, reference: float) -> str:
    if reference != reference or value != value or reference <= 0:
        return "-"
    return f"{value / reference:.2f}x"


def percent(value: float) -> str:
    return "-" if value != value else f"{value * 100:.2f}"


def build_rows(results: Sequence[Result], raw: LatencyStats, raw_single: LatencyStats,
               args: argparse.Namespace) -> tuple[list[list[str]], list[str]]:
    hot = min(args.hot, args.keys)
    period = args.ttl - args.refresh_ahead
    rows: list[list[str]] = [
        [f"raw GET, {args.threads} threads (ref)", "-", "-", "-", format_ms(raw.p50), format_ms(raw.p99),
         "1.00x", "1.00x", "-", "-", "-", "-"],
        ["raw GET, 1 thread", "-", "-", "-", format_ms(raw_single.p50), format_ms(raw_single.p99),
         ratio(raw_single.p99, raw.p99), "-", "-", "-", "-", "-"],
    ]
    notes: list[str] = []
    base_rate: float | None = None
    for result in results:
        records = result.records
        all_latency = records.latency()
        hot_latency = records.latency(hot)
        hot_hit = records.hit_ratio(hot)
        rate = result.source_requests / result.window
        if base_rate is None:
            base_rate = rate
        per_period = result.hot_requests / hot / (result.window / period) if period > 0 else float("nan")
        goals = [
            hot_hit >= GOAL_HOT_HIT,
            all_latency.p99 <= GOAL_P99_RATIO * raw.p99,
            per_period <= GOAL_REQ_PER_PERIOD,
        ]
        rows.append([
            result.name,
            f"{records.throughput():,.0f}",
            percent(records.hit_ratio()),
            percent(hot_hit),
            format_ms(all_latency.p50),
            format_ms(all_latency.p99),
            ratio(all_latency.p99, raw.p99),
            ratio(hot_latency.p99, raw.p99),
            f"{rate:,.1f}",
            ratio(rate, base_rate),
            f"{per_period:.2f}",
            " ".join("Y" if ok else "n" for ok in goals),
        ])
        if records.errors:
            notes.append(f"{result.name}: {records.errors} failed reads, first: {records.first_error}")
    return rows, notes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    add_common_args(parser)
    names = [name for name, _ in SYSTEMS]
    parser.add_argument("--systems", default=",".join(names),
                        help=f"comma-separated subset of: {', '.join(names)} (default: all)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of unmeasured reads before the window (default 10; 1 with --quick)")
    parser.add_argument("--ttl", type=float, default=5.0, help="TTL of cached values, seconds (default 5)")
    parser.add_argument("--refresh-ahead", type=float, default=1.0,
                        help="refresh when less than this remains, seconds (default 1)")
    parser.add_argument("--latency", type=float, default=0.05, help="source latency, seconds (default 0.05)")
    parser.add_argument("--hot", type=int, default=500, help="the hottest keys reported apart (default 500)")
    parser.add_argument("--s", type=float, default=1.1, help="Zipf exponent (default 1.1)")
    parser.add_argument("--raw-seconds", type=float, default=None,
                        help="duration of the raw-GET reference (default seconds/6, between 2 and 10)")
    add_topology_arg(parser)
    args = parse_common_args(parser, argv)
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 10.0
    if args.raw_seconds is None:
        args.raw_seconds = min(10.0, max(2.0, args.seconds / 6))
    if not 0 <= args.refresh_ahead < args.ttl:
        parser.error("--refresh-ahead must be >= 0 and < --ttl")
    if args.hot <= 0 or args.warmup < 0:
        parser.error("--hot must be > 0 and --warmup >= 0")
    chosen = [n.strip() for n in args.systems.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown or not chosen:
        parser.error(f"--systems: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(names)}")
    selected = [(name, factory) for name, factory in SYSTEMS if name in chosen]
    if FIRST_SYSTEM_DB + len(SYSTEMS) > 16:
        parser.error("more systems than Redis databases")

    log(f"before the runs: {load_average()}")
    figures: dict[str, dict[str, float]] = {}
    for topology in topologies_of(args):
        figures[topology] = run_topology(topology, selected, names, args)
    if len(figures) > 1:
        side_by_side("hit_ratio: cachewarm on standalone and cluster",
                     [Figure(name, 0.995 if name.startswith("hit%") else None, higher=name.startswith("hit%"))
                      for name in figures["standalone"]], figures,
                     notes=["goal: hit ratios unchanged within noise (here: cluster >= 0.995x standalone's)",
                            f"after the runs: {load_average()}"])
    return 0


def run_topology(topology: str, selected: list[tuple[str, Callable[[], System]]], names: list[str],
                 args: argparse.Namespace) -> dict[str, float]:
    """One topology's table; returns cachewarm's figures (if it ran) by name."""
    sampler = ZipfSampler(args.keys, args.s, args.seed)
    hot = min(args.hot, args.keys)
    results: list[Result] = []
    items = max(100_000, args.keys)
    with cache_servers(topology) as servers, SourceProcess(latency=args.latency, items=items) as source:
        log(f"{topology}: raw GET reference: {args.threads} threads, then 1 thread, {args.raw_seconds:g} s each")
        raw = measure_raw_get(servers.redis_url, args.raw_seconds, threads=args.threads, cluster=servers.cluster)
        raw_single = measure_raw_get(servers.redis_url, args.raw_seconds, threads=1, cluster=servers.cluster)
        for name, factory in selected:
            if servers.cluster and name != "cachewarm":
                log(f"{name}: skipped on a cluster (a single-server client)")
                continue
            if servers.cluster:
                factory = lambda: CachewarmWorkers(servers)  # noqa: E731 - used within this iteration
                url = servers.redis_url
            else:
                url = servers.redis_url.rsplit("/", 1)[0] + f"/{FIRST_SYSTEM_DB + names.index(name)}"
            log(f"{topology} {name}: {args.warmup:g} s warm-up + {args.seconds:g} s, {url}")
            result = run_system(name, factory, redis_url=url, source=source, args=args, servers=servers)
            log(f"{name}: {len(result.records):,} reads, {result.source_requests:,} source requests")
            results.append(result)

    columns = ["system", "reads/s", "hit% all", f"hit% hot{hot}", "p50 ms", "p99 ms", "p99/raw",
               "hot p99/raw", "src req/s", f"src/{results[0].name}", "req/hot key/period",
               "goals hit,p99,req"]
    rows, notes = build_rows(results, raw, raw_single, args)
    title = (f"hit_ratio ({topology}): Zipf s={args.s:g} over {args.keys:,} keys, {args.threads} threads, "
             f"{args.seconds:g} s "
             f"(+{args.warmup:g} s warm-up), ttl {args.ttl:g} s, refresh ahead {args.refresh_ahead:g} s, "
             f"source {args.latency * 1000:g} ms")
    notes = [
        f"hot{hot} = ranks 0..{hot - 1}, {sampler.mass(hot) * 100:.1f}% of reads; refresh period = ttl - "
        f"refresh_ahead = {args.ttl - args.refresh_ahead:g} s",
        f"p99/raw: against a raw redis-py GET's p99 with the readers' {args.threads} threads (same GIL and "
        f"pool contention as the systems' reads; {raw.count:,} GETs); the 1-thread row is for context",
        f"goals: hit% hot{hot} >= {GOAL_HOT_HIT * 100:g}, p99 <= {GOAL_P99_RATIO:g}x raw GET p99, "
        f"req/hot key/period <= {GOAL_REQ_PER_PERIOD:g}",
        *notes,
        load_average(),
    ]
    markdown = print_table(title, columns, rows, notes=notes)
    if args.markdown:
        print()
        print(markdown)
    mine = next((row for row in rows if row[0] == "cachewarm"), None)
    if mine is None:
        return {}
    return {"hit% all": float(mine[2]), f"hit% hot{hot}": float(mine[3]), "read p50 ms": float(mine[4]),
            "read p99 ms": float(mine[5]), "raw GET p99 ms": raw.p99 * 1000,
            "src req/s": float(mine[8].replace(",", "")), "req/hot key/period": float(mine[10])}


if __name__ == "__main__":
    sys.exit(main())
