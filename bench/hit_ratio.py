"""Hit-ratio benchmark: how well does each system keep the hot keys warm, and at what cost to the source?

Zipf (s = 1.1) reads over --keys keys (default 10,000) from --threads reader threads (default 4): a --warmup (default
two of cachewarm's popularity half-lives, 120 s: the hot set has learnt the ranking; not measured, same for every
system), the measured window of --seconds (default 60: the steady state), then --shift-seconds (default 60) with
the ranking moved to key ids never read before (rank r reads key keys + r): the learning misses of newly hot keys.
TTL 5 s, refresh ahead 1 s, source latency 50 ms over HTTP (`cachewarm.demo.source` in a child process). Every
system runs on its own freshly flushed database of one private redis-server, against the same source, one after
the other. cachewarm runs with the default hot-key settings (half-life 60 s: --half-life; threshold 0.9: --threshold).

Columns:
  hit% all / hit% hot        hits over all reads / over reads of the --hot hottest keys (ranks 0..hot-1), as
                             reported by each system's read (a read that waited for the source is a miss)
  p50 / p99                  read latency over all reads; p99/raw and hot p99/raw divide the p99 over all
                             reads / over hot-key reads by a raw redis-py GET's p99 measured in this run with
                             the same number of threads
  src req/s                  source requests during the measured window / its length
  req/hot key/period         source requests for the hot ids / hot / (window / (ttl - refresh_ahead)): 1.0 is
                             what keeping every hot key always fresh costs; more means duplicate fetches
  learn miss/new hot         per newly hot key (the hot ranks after the shift), its misses before its first hit
cachewarm's second table: its refreshes over the window (the workers' refresh:stats), the share nobody read before
the key's next refresh (wasted) and the source requests they cost, late refreshes, the hot set's size, and the
window's hot misses split by whether the key's decayed read count was at the threshold (see the notes printed).
Goals (issue 12): steady-state hot hit ratio >= 99.9 %, hot read p99 <= 3x raw GET p99, req/hot key/period <= 1.05,
learning misses per newly hot key <= 1.5.

    python -m bench.hit_ratio [--quick] [--systems classic,locked] [--markdown]
        [--warmup S] [--shift-seconds S] [--half-life S] [--topology standalone|cluster|both]

`--topology cluster` runs cachewarm alone (the baselines are single-server clients) with the cache on a private
3-master Redis Cluster and a standalone broker, the raw GET reference through a RedisCluster; `both` runs the
two and prints cachewarm's figures side by side (goal: the hit ratios unchanged within noise).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

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
    run_open_loop,
    run_readers,
)
from bench.economy import add_economy_args, cachewarm_fields, economy_rows, prediction_rows, variants
from bench.topology import (
    CacheServers,
    Figure,
    add_topology_arg,
    cache_servers,
    load_average,
    side_by_side,
    topologies_of,
)
from cachewarm import Cache, Settings
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
    # the defaults; readers and workers must agree on the half-life: it is the unit of the hot:S scores
    HALF_LIFE: float = Settings.model_fields["hot_half_life"].default
    THRESHOLD: float = Settings.model_fields["hot_threshold"].default

    def __init__(self, servers: CacheServers | None = None, *, half_life: float | None = None,
                 threshold: float | None = None, fields: dict[str, float] | None = None) -> None:
        self._servers = servers  # a cluster's; standalone: the database given to setup, the broker in db 1
        self.fields = dict(fields or {})  # keyspace fields beyond the defaults (refresh_worth, refresh_budget)
        if half_life is not None:
            self.HALF_LIFE = half_life
        if threshold is not None:
            self.THRESHOLD = threshold
        self._counters_client: redis.Redis | None = None
        self._cache: Cache | None = None
        self._worker: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def setup(self, redis_url: str, source_url: str, ttl: float, refresh_ahead: float) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="cachewarm-hit-ratio-")
        tmp = Path(self._tmp.name)
        config = tmp / "cachewarm.toml"
        config.write_text(f'[keyspaces.product]\npattern = "product:{{id}}"\nsource = "{source_url}/products/{{id}}"'
                          f"\nttl = {ttl}\nrefresh_ahead = {refresh_ahead}\n"
                          + "".join(f"{name} = {value!r}\n" for name, value in self.fields.items()))
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
        self._counters_client = cache.client()
        self._wait_for_scans(cache)

    def worker_stats(self) -> dict[str, float]:
        """The workers' counters and gauges (`refresh:stats`: refreshed, wasted, late, skipped, hot_keys,
        backlog_seconds... per keyspace)."""
        assert self._counters_client is not None
        raw: dict[bytes, bytes] = self._counters_client.hgetall("cachewarm:refresh:stats")  # type: ignore[assignment]
        return {name.decode(): float(value) for name, value in raw.items()}

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
        if self._counters_client is not None:
            self._counters_client.close()
            self._counters_client = None
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

GOAL_HOT_HIT = 0.999        # steady state: after the warm-up has lasted two half-lives
GOAL_P99_RATIO = 3.0        # hot-set reads' p99 over a raw GET's p99
GOAL_REQ_PER_PERIOD = 1.05
GOAL_LEARNING = 1.5         # misses per newly hot key before it is kept warm (the floor is 1: its first read)
GAUGE_EVERY = 0.5           # seconds between samples of the workers' gauges

ReadLog = list[tuple[float, int, bool]]  # (monotonic time the read started, key id, hit), every read, every phase


@dataclass
class Learning:
    """Newly hot keys after the shift: keys ids never read before, at the hot ranks."""

    keys: int = 0             # newly hot keys whose learning is known (a hit, or two reads or more)
    misses: int = 0           # their misses before their first hit (all of them for a key that never hit)
    undetermined: int = 0     # newly hot keys read once (a miss) and never again in the phase
    unread: int = 0           # newly hot keys not read at all in the phase
    relapses: int = 0         # misses of the keys after their first hit (steady-state misses of new keys)
    reads: int = 0
    hits: int = 0

    @property
    def mean(self) -> float:
        return self.misses / self.keys if self.keys else float("nan")


@dataclass
class WorkerFigures:
    """cachewarm's refresh accounting over the steady window (refresh:stats deltas and gauge samples)."""

    refreshed: float = 0.0
    wasted: float = 0.0
    late: float = 0.0
    skipped: float = 0.0
    failed: float = 0.0
    hot_keys: list[float] = field(default_factory=list)
    backlog_seconds: list[float] = field(default_factory=list)
    backlog_keys: list[float] = field(default_factory=list)
    latency: float = float("nan")   # the source latency the refreshes measured (fetch_us / fetches)
    left_out: float = 0.0           # due keys the refresh budget left out, counted per scan


@dataclass
class Result:
    name: str
    records: ReadRecords
    window: float  # seconds between the source-stats reset and the stats snapshot
    source_requests: int
    hot_requests: int
    log: ReadLog = field(default_factory=list)
    window_start: float = 0.0     # monotonic: the steady window, then the shift phase from window_end
    window_end: float = 0.0
    shift_records: ReadRecords | None = None
    learning: Learning | None = None
    worker: WorkerFigures | None = None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def logged(read: Callable[[int], tuple[Any, bool]], entries: ReadLog,
           offset: int = 0) -> Callable[[int], tuple[Any, bool]]:
    """`read` of key id offset + rank, each read appended to `entries` (list.append: atomic under the GIL)."""
    clock = time.monotonic

    def read_rank(rank: int) -> tuple[Any, bool]:
        started = clock()
        value, hit = read(offset + rank)
        entries.append((started, offset + rank, hit))
        return value, hit
    return read_rank


class GaugeSampler:
    """Samples the workers' gauges every GAUGE_EVERY s in a thread, between start() and stop()."""

    def __init__(self, stats: Callable[[], dict[str, float]], keyspace: str, into: WorkerFigures) -> None:
        self._stats, self._keyspace, self._into = stats, keyspace, into
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-gauges", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        ks = self._keyspace
        while not self._stop.wait(GAUGE_EVERY):
            try:
                stats = self._stats()
            except redis.RedisError:
                continue
            self._into.hot_keys.append(stats.get(f"hot_keys:{ks}", 0.0))
            self._into.backlog_seconds.append(stats.get(f"backlog_seconds:{ks}", 0.0))
            self._into.backlog_keys.append(stats.get(f"backlog_keys:{ks}", 0.0))


def run_system(name: str, factory: Callable[[], System], *, redis_url: str, source: SourceProcess,
               args: argparse.Namespace, servers: CacheServers | None = None) -> Result:
    """Warm-up, the steady window (`--seconds`), then the shift phase (`--shift-seconds`: the Zipf ranking moves
    to key ids never read before, rank r reading key id keys + r)."""
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
    worker_stats: Callable[[], dict[str, float]] | None = getattr(system, "worker_stats", None)
    figures = WorkerFigures() if worker_stats is not None else None
    before: dict[str, float] = {}
    sampler_thread = (GaugeSampler(worker_stats, "product", figures)
                      if worker_stats is not None and figures is not None else None)

    def measure_start() -> None:
        source.reset_stats()
        window_start[0] = time.monotonic()
        if worker_stats is not None and sampler_thread is not None:
            before.update(worker_stats())
            sampler_thread.start()

    entries: ReadLog = []
    shift_records: ReadRecords | None = None
    try:
        sampler = ZipfSampler(args.keys, args.s, args.seed)
        warmup = args.warmup if worker_stats is not None else min(args.warmup, args.baseline_warmup)
        records = drive(logged(system.read, entries), args, args.seconds, sampler, warmup=warmup,
                        on_measure_start=measure_start)
        stats: dict[str, Any] = source.stats()
        window_end = time.monotonic()
        if worker_stats is not None and figures is not None and sampler_thread is not None:
            sampler_thread.stop()
            after = worker_stats()
            for attr, prefix in (("refreshed", "refreshed"), ("wasted", "wasted"), ("late", "late"),
                                 ("skipped", "skipped"), ("failed", "failed")):
                field_name = f"{prefix}:product"
                setattr(figures, attr, after.get(field_name, 0.0) - before.get(field_name, 0.0))
            figures.left_out = after.get("left_out:product", 0.0) - before.get("left_out:product", 0.0)
            if after.get("fetches:product"):
                figures.latency = after["fetch_us:product"] / after["fetches:product"] / 1e6
        if args.shift_seconds > 0:
            shift_records = drive(logged(system.read, entries, offset=args.keys), args, args.shift_seconds,
                                  ZipfSampler(args.keys, args.s, args.seed + 1))
    finally:
        if sampler_thread is not None and sampler_thread._thread.is_alive():
            sampler_thread.stop()
        system.close()
    window = window_end - window_start[0]
    by_path: dict[str, int] = stats.get("by_path", {})
    hot = min(args.hot, args.keys)
    hot_requests = sum(int(by_path.get(product_path(i), 0)) for i in range(hot))
    result = Result(name, records, window, int(stats["requests"]), hot_requests, entries, window_start[0],
                    window_end, shift_records, worker=figures)
    if shift_records is not None:
        result.learning = learning(entries, since=window_end, first=args.keys, hot=hot)
    return result


def drive(read: Callable[[int], tuple[Any, bool]], args: argparse.Namespace, seconds: float, sampler: ZipfSampler,
          *, warmup: float = 0.0, on_measure_start: Callable[[], None] | None = None) -> ReadRecords:
    """The reads of one phase: offered at --rate with Poisson arrivals (--load open, the default: every system
    gets the same reads) or as fast as --threads readers go (--load closed: a faster system reads more)."""
    if args.load == "open":
        return run_open_loop(read, args.rate, seconds, sampler, concurrency=args.concurrency, warmup=warmup,
                             on_measure_start=on_measure_start)
    return run_readers(read, args.threads, seconds, sampler, warmup=warmup, on_measure_start=on_measure_start)


def learning(entries: ReadLog, *, since: float, first: int, hot: int) -> Learning:
    """Learning misses of the keys that became hot at the shift (key ids first .. first + hot - 1, never read
    before it): per key, its misses before its first hit; a key that never hit counts all its misses if it was
    read twice or more, and is left out (undetermined) if it was read once."""
    per_key: dict[int, list[bool]] = {}
    for started, key, hit in entries:
        if started >= since and first <= key < first + hot:
            per_key.setdefault(key, []).append(hit)
    out = Learning(unread=hot - len(per_key))
    for hits in per_key.values():
        out.reads += len(hits)
        out.hits += sum(hits)
        if True in hits:
            first_hit = hits.index(True)
            out.keys += 1
            out.misses += first_hit
            out.relapses += hits[first_hit:].count(False)
        elif len(hits) >= 2:
            out.keys += 1
            out.misses += len(hits)
        else:
            out.undetermined += 1
    return out


def classify_misses(result: Result, hot: int, *, half_life: float, threshold: float) -> tuple[int, int]:
    """The steady window's misses of hot ranks, split by the key's decayed read count just before the read
    (from every read the bench made, warm-up included): (at or above the threshold, i.e. in the hot set the
    workers keep warm, up to the stats flush's delay; below it)."""
    times: dict[int, list[float]] = {}
    for started, key, _ in result.log:
        if key < hot:
            times.setdefault(key, []).append(started)
    above = below = 0
    for started, key, hit in result.log:
        if hit or key >= hot or not result.window_start <= started < result.window_end:
            continue
        count = sum(2.0 ** (-(started - t) / half_life) for t in times[key] if t < started)
        if count >= threshold:
            above += 1
        else:
            below += 1
    return above, below


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
         "1.00x", "1.00x", "-", "-", "-", "-", "-"],
        ["raw GET, 1 thread", "-", "-", "-", format_ms(raw_single.p50), format_ms(raw_single.p99),
         ratio(raw_single.p99, raw.p99), "-", "-", "-", "-", "-", "-"],
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
        learned = result.learning.mean if result.learning is not None else float("nan")
        goals = [
            hot_hit >= GOAL_HOT_HIT,
            hot_latency.p99 <= GOAL_P99_RATIO * raw.p99,
            per_period <= GOAL_REQ_PER_PERIOD,
            learned <= GOAL_LEARNING,
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
            "-" if learned != learned else f"{learned:.2f}",
            " ".join("Y" if ok else "n" for ok in goals),
        ])
        if records.errors:
            notes.append(f"{result.name}: {records.errors} failed reads, first: {records.first_error}")
    return rows, notes


def learning_model(shift: ReadRecords, args: argparse.Namespace) -> float:
    """Learning misses per newly hot key if each were known as hot at its second read (one read leaves a key at 1
    decayed read, below a threshold of 1 as soon as it decays) and nothing else missed: 1 + the chance that its
    second read comes after its first value's TTL, with Poisson reads at the shift phase's reads/s."""
    sampler = ZipfSampler(args.keys, args.s, args.seed)
    rate = shift.throughput()
    hot: int = min(args.hot, args.keys)
    ttl: float = args.ttl
    return 1 + sum(math.exp(-ttl * rate * sampler.probability(r)) for r in range(hot)) / hot


def worker_rows(results: Sequence[Result], args: argparse.Namespace) -> list[list[str]]:
    """cachewarm's refreshes over the steady window: how many nobody read before the next one, what they cost."""
    hot = min(args.hot, args.keys)
    rows: list[list[str]] = []
    for result in results:
        w = result.worker
        if w is None:
            continue
        above, below = classify_misses(result, hot, half_life=args.half_life, threshold=args.threshold)
        src_rate = result.source_requests / result.window
        wasted_rate = w.wasted / result.window
        lrn = result.learning
        rows.append([
            result.name,
            f"{w.refreshed / result.window:,.1f}",
            percent(w.wasted / w.refreshed if w.refreshed else float("nan")),
            f"{wasted_rate:,.1f}",
            percent(wasted_rate / src_rate if src_rate else float("nan")),
            percent(w.late / w.refreshed if w.refreshed else float("nan")),
            f"{sum(w.hot_keys) / len(w.hot_keys):,.0f}" if w.hot_keys else "-",
            f"{max(w.backlog_seconds):.2f}" if w.backlog_seconds else "-",
            f"{above} / {below}",
            "-" if lrn is None else f"{lrn.keys} / {lrn.undetermined} / {lrn.unread}",
            "-" if lrn is None or not lrn.keys else f"{lrn.relapses / lrn.keys:.3f}",
            "-" if result.shift_records is None else f"{learning_model(result.shift_records, args):.2f}",
        ])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    add_common_args(parser)
    names = [name for name, _ in SYSTEMS]
    parser.add_argument("--systems", default=",".join(names),
                        help=f"comma-separated subset of: {', '.join(names)} (default: all)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of unmeasured reads before the window (default two half-lives, 120 s: "
                             "the hot set has then learnt the ranking; 1 with --quick)")
    parser.add_argument("--half-life", type=float, default=CachewarmWorkers.HALF_LIFE,
                        help=f"cachewarm's CACHEWARM_HOT_HALF_LIFE (default {CachewarmWorkers.HALF_LIFE:g})")
    parser.add_argument("--threshold", type=float, default=CachewarmWorkers.THRESHOLD,
                        help=f"cachewarm's CACHEWARM_HOT_THRESHOLD (default {CachewarmWorkers.THRESHOLD:g})")
    parser.add_argument("--shift-seconds", type=float, default=None,
                        help="after the window, reads go on this long with the ranking moved to keys never read "
                             "before: the learning misses of newly hot keys (default 60; 10 with --quick; "
                             "0: no shift)")
    parser.add_argument("--ttl", type=float, default=5.0, help="TTL of cached values, seconds (default 5)")
    parser.add_argument("--refresh-ahead", type=float, default=1.0,
                        help="refresh when less than this remains, seconds (default 1)")
    parser.add_argument("--latency", type=float, default=0.05, help="source latency, seconds (default 0.05)")
    parser.add_argument("--hot", type=int, default=500, help="the hottest keys reported apart (default 500)")
    parser.add_argument("--s", type=float, default=1.1, help="Zipf exponent (default 1.1)")
    parser.add_argument("--raw-seconds", type=float, default=None,
                        help="duration of the raw-GET reference (default seconds/6, between 2 and 10)")
    add_topology_arg(parser)
    add_economy_args(parser)
    args = parse_common_args(parser, argv)
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2 * args.half_life
    if args.shift_seconds is None:
        args.shift_seconds = 10.0 if args.quick else 60.0
    if args.half_life <= 0 or args.shift_seconds < 0:
        parser.error("--half-life must be > 0 and --shift-seconds >= 0")
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
    if FIRST_SYSTEM_DB + len(selected) + len(variants(args)) > 16:
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
        plan: list[tuple[str, Callable[[], System] | None]] = [*selected, *((v, None) for v in variants(args))]
        for index, (name, factory) in enumerate(plan):
            fields = cachewarm_fields(name, args, results)
            if fields is not None:  # cachewarm or one of its variants (--variants, --budget-x)
                factory = functools.partial(CachewarmWorkers, servers if servers.cluster else None,
                                            half_life=args.half_life, threshold=args.threshold, fields=fields)
                url = (servers.redis_url if servers.cluster
                       else servers.redis_url.rsplit("/", 1)[0] + f"/{FIRST_SYSTEM_DB + index}")
                log(f"{name}: keyspace fields {fields or '(defaults)'}")
            elif servers.cluster:
                log(f"{name}: skipped on a cluster (a single-server client)")
                continue
            else:
                url = servers.redis_url.rsplit("/", 1)[0] + f"/{FIRST_SYSTEM_DB + index}"
            assert factory is not None
            log(f"{topology} {name}: {args.warmup:g} s warm-up + {args.seconds:g} s + {args.shift_seconds:g} s "
                f"shifted, {url}")
            result = run_system(name, factory, redis_url=url, source=source, args=args, servers=servers)
            log(f"{name}: {len(result.records):,} reads, {result.source_requests:,} source requests")
            results.append(result)

    columns = ["system", "reads/s", "hit% all", f"hit% hot{hot}", "p50 ms", "p99 ms", "p99/raw",
               "hot p99/raw", "src req/s", f"src/{results[0].name}", "req/hot key/period", "learn miss/new hot",
               "goals hit,hot p99,req,learn"]
    rows, notes = build_rows(results, raw, raw_single, args)
    title = (f"hit_ratio ({topology}): Zipf s={args.s:g} over {args.keys:,} keys, {args.threads} threads, "
             f"{args.seconds:g} s after a {args.warmup:g} s warm-up, then {args.shift_seconds:g} s shifted; ttl "
             f"{args.ttl:g} s, refresh ahead {args.refresh_ahead:g} s, source {args.latency * 1000:g} ms, "
             f"cachewarm half-life {args.half_life:g} s, threshold {args.threshold:g}")
    notes = [
        f"hot{hot} = ranks 0..{hot - 1}, {sampler.mass(hot) * 100:.1f}% of reads; refresh period = ttl - "
        f"refresh_ahead = {args.ttl - args.refresh_ahead:g} s",
        f"the window opens after a {args.warmup:g} s warm-up ({args.warmup / args.half_life:.1f} half-lives of "
        f"cachewarm's popularity): hit%, latency and source figures are the steady state's",
        f"p99/raw, hot p99/raw: p99 of all reads / of hot{hot} reads over a raw redis-py GET's p99 with the readers' "
        f"{args.threads} threads (same GIL and pool contention as the systems' reads; {raw.count:,} GETs); the "
        f"1-thread row is for context",
        "learn miss/new hot: after the window the ranking moves to key ids never read (rank r reads key "
        f"{args.keys} + r) for {args.shift_seconds:g} s; per newly hot key (the new hot{hot}), its misses before "
        "its first hit (a key that never hit: all its misses, if read twice or more; read once: left out); "
        "the floor is 1",
        f"goals: hit% hot{hot} >= {GOAL_HOT_HIT * 100:g}, hot p99 <= {GOAL_P99_RATIO:g}x raw GET p99, "
        f"req/hot key/period <= {GOAL_REQ_PER_PERIOD:g}, learn miss/new hot <= {GOAL_LEARNING:g}",
        *notes,
        load_average(),
    ]
    markdown = print_table(title, columns, rows, notes=notes)
    wrows = worker_rows(results, args)
    wmarkdown = ""
    if wrows:
        wmarkdown = print_table(
            f"hit_ratio ({topology}): cachewarm's refreshes over the window",
            ["system", "refreshes/s", "wasted %", "wasted src req/s", "wasted % of src req", "late %",
             "hot keys", "backlog s max", f"hot{hot} misses hot/cold", "new hot keys known/once/unread",
             "new hot relapses/key", "learn model"],
            wrows, notes=[
                "wasted: a refresh nobody read before the key's next refresh (the worker's SEEN check, "
                "refresh:stats wasted:S); each cost one source request",
                "late: the refresh took its lease after the value had expired; hot keys: the scan's hot_keys "
                f"gauge, mean of samples every {GAUGE_EVERY:g} s; backlog s max: the most overdue due key a scan saw",
                f"hot{hot} misses hot/cold: the window's misses of hot ranks whose decayed read count (the bench's "
                "own reads) was at/above the threshold just before the read (kept warm by the workers) / below it",
                "new hot relapses/key: misses of newly hot keys after their first hit, per key",
                "learn model: the learning misses if each newly hot key were kept warm from its second read on "
                "(as with a threshold of 1 or more: one read is not enough; the reference the default 0.9 is measured "
                "against) and nothing else missed: 1 + mean P(second read after the "
                "TTL), Poisson reads at the shift phase's reads/s",
            ])
    ecolumns, erows, enotes = economy_rows(results, hot)
    load = (f"open loop, {args.rate:g} reads/s offered (Poisson), {args.concurrency} reader threads"
            if args.load == "open" else f"closed loop, {args.threads} threads")
    emarkdown = print_table(f"hit_ratio ({topology}): economy, {load}", ecolumns, erows, notes=enotes)
    pcolumns, prows, pnotes = prediction_rows(results, args)
    if prows:
        emarkdown += "\n" + print_table(f"hit_ratio ({topology}): the simulator against the live run", pcolumns,
                                         prows, notes=pnotes)
    if args.markdown:
        print()
        print(markdown)
        if wmarkdown:
            print(wmarkdown)
        print(emarkdown)
    mine = next((row for row in rows if row[0] == "cachewarm"), None)
    if mine is None:
        return {}
    figures = {"hit% all": float(mine[2]), f"hit% hot{hot}": float(mine[3]), "read p50 ms": float(mine[4]),
               "read p99 ms": float(mine[5]), "raw GET p99 ms": raw.p99 * 1000,
               "src req/s": float(mine[8].replace(",", "")), "req/hot key/period": float(mine[10])}
    if mine[11] != "-":
        figures["learn miss/new hot"] = float(mine[11])
    return figures


if __name__ == "__main__":
    sys.exit(main())
