"""Shared pieces of the benchmarks: Zipf key sampling, reader threads, latency statistics, tables, CLI flags.

Every benchmark runs its baselines and the candidate in the same run, against the same private
redis-server and the same source process, and prints one table with ratios. Latencies are measured with
`time.perf_counter_ns` around the system's read call only (sampling and bookkeeping are outside the timed
region).
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import queue
import random
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.cluster

__all__ = [
    "LatencyStats",
    "ReadRecords",
    "ZipfSampler",
    "add_common_args",
    "format_ms",
    "latency_stats",
    "measure_raw_get",
    "parse_common_args",
    "print_table",
    "run_open_loop",
    "run_readers",
]

ReadFn = Callable[[int], tuple[Any, bool]]

QUICK_SECONDS = 5.0
QUICK_KEYS = 1_000
DEFAULT_SECONDS = 60.0
DEFAULT_KEYS = 10_000
DEFAULT_THREADS = 4


# --------------------------------------------------------------------------------------------------- sampling


class ZipfSampler:
    """Seeded Zipf(s) sampler over ranks 0..n-1: P(rank i) is proportional to 1 / (i + 1) ** s.

    Key i has rank i (key 0 is the hottest). The CDF is computed once; `fork` gives an independent, seeded
    sampler that shares it, one per reader thread (random.Random is not meant to be shared between threads).
    """

    def __init__(self, n: int, s: float = 1.1, seed: int = 1, *, _cdf: list[float] | None = None) -> None:
        if n <= 0:
            raise ValueError("n must be > 0")
        self.n = n
        self.s = s
        self.seed = seed
        if _cdf is None:
            weights = [(i + 1) ** -s for i in range(n)]
            total = sum(weights)
            _cdf = list(itertools.accumulate(w / total for w in weights))
            _cdf[-1] = 1.0
        self._cdf = _cdf
        self._random = random.Random(seed)

    def sample(self) -> int:
        return min(bisect.bisect_left(self._cdf, self._random.random()), self.n - 1)

    def fork(self, index: int) -> ZipfSampler:
        """An independent sampler with the same distribution, seeded from this one's seed and `index`."""
        return ZipfSampler(self.n, self.s, self.seed * 1_000_003 + index + 1, _cdf=self._cdf)

    def probability(self, rank: int) -> float:
        return self._cdf[rank] - (self._cdf[rank - 1] if rank > 0 else 0.0)

    def mass(self, top: int) -> float:
        """Probability that a read goes to one of the `top` hottest keys."""
        return self._cdf[min(top, self.n) - 1] if top > 0 else 0.0


# --------------------------------------------------------------------------------------------------- latency


@dataclass(frozen=True)
class LatencyStats:
    count: int
    p50: float  # seconds
    p99: float
    max: float


def percentile(values: Sequence[float], q: float, *, ordered: bool = False) -> float:
    """Nearest-rank percentile (q in [0, 100]) of `values` (already sorted when `ordered`); NaN when empty. The one
    definition every bench reports with."""
    data = values if ordered else sorted(values)
    if not data:
        return float("nan")
    return data[max(0, min(len(data) - 1, math.ceil(q / 100 * len(data)) - 1))]


def latency_stats(latencies: Sequence[float]) -> LatencyStats:
    """p50 / p99 / max (seconds) by sorting."""
    ordered = sorted(latencies)
    if not ordered:
        return LatencyStats(0, float("nan"), float("nan"), float("nan"))
    return LatencyStats(len(ordered), percentile(ordered, 50, ordered=True), percentile(ordered, 99, ordered=True),
                        ordered[-1])


@dataclass
class ReadRecords:
    """Per-read records of one run, merged from the reader threads (parallel arrays, one entry per read)."""

    ranks: array[int] = field(default_factory=lambda: array("i"))
    hits: bytearray = field(default_factory=bytearray)
    latencies: array[float] = field(default_factory=lambda: array("d"))  # seconds
    errors: int = 0
    first_error: str | None = None
    seconds: float = 0.0  # the measured window
    late: int = 0         # open loop: reads that started more than 10 ms after their arrival

    def __len__(self) -> int:
        return len(self.ranks)

    def extend(self, other: ReadRecords) -> None:
        self.ranks.extend(other.ranks)
        self.hits.extend(other.hits)
        self.latencies.extend(other.latencies)
        self.errors += other.errors
        self.late += other.late
        self.first_error = self.first_error or other.first_error

    def _select(self, below_rank: int | None) -> range | list[int]:
        if below_rank is None:
            return range(len(self.ranks))
        return [i for i, rank in enumerate(self.ranks) if rank < below_rank]

    def count(self, below_rank: int | None = None) -> int:
        return len(self._select(below_rank))

    def hit_ratio(self, below_rank: int | None = None) -> float:
        """Hits / reads, over all reads or over reads of ranks < below_rank."""
        chosen = self._select(below_rank)
        if not chosen:
            return float("nan")
        return sum(self.hits[i] for i in chosen) / len(chosen)

    def latency(self, below_rank: int | None = None) -> LatencyStats:
        if below_rank is None:
            return latency_stats(self.latencies)
        return latency_stats([self.latencies[i] for i in self._select(below_rank)])

    def throughput(self) -> float:
        return len(self) / self.seconds if self.seconds > 0 else float("nan")


# --------------------------------------------------------------------------------------------------- readers


def run_readers(read_fn: ReadFn, threads: int, seconds: float, sampler: ZipfSampler, *,
                warmup: float = 0.0, on_measure_start: Callable[[], None] | None = None) -> ReadRecords:
    """Calls `read_fn(key_rank)` in a loop from `threads` threads for `warmup + seconds` seconds.

    `read_fn` returns `(value, hit)`: the hit is what the system itself reports. Reads that *start* during the
    warm-up are not recorded; `on_measure_start` runs (in the calling thread) when the measured window opens,
    e.g. to reset the source's counters. Each thread keeps its own arrays; they are merged at the end. A read
    that raises is counted in `errors` (not in the latencies) and the thread goes on.
    """
    if threads <= 0:
        raise ValueError("threads must be > 0")
    start = time.monotonic() + 0.05  # let every thread get going before the clock starts
    measure_from = start + warmup
    stop_at = measure_from + seconds
    per_thread = [ReadRecords() for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def reader(index: int) -> None:
        records = per_thread[index]
        own = sampler.fork(index)
        ranks, hits, latencies = records.ranks, records.hits, records.latencies
        clock = time.perf_counter_ns
        now = time.monotonic
        barrier.wait()
        while True:
            t = now()
            if t >= stop_at:
                break
            rank = own.sample()
            t0 = clock()
            try:
                _, hit = read_fn(rank)
            except Exception as exc:
                if t >= measure_from:
                    records.errors += 1
                    if records.first_error is None:
                        records.first_error = f"{type(exc).__name__}: {exc}"
                continue
            elapsed = (clock() - t0) / 1e9
            if t >= measure_from:
                ranks.append(rank)
                hits.append(1 if hit else 0)
                latencies.append(elapsed)

    workers = [threading.Thread(target=reader, args=(i,), name=f"bench-reader-{i}", daemon=True)
               for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    delay = measure_from - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    window_start = time.monotonic()
    if on_measure_start is not None:
        on_measure_start()
    for worker in workers:
        worker.join()
    merged = ReadRecords()
    for records in per_thread:
        merged.extend(records)
    merged.seconds = max(stop_at - window_start, 1e-9)
    return merged


def run_open_loop(read_fn: ReadFn, rate: float, seconds: float, sampler: ZipfSampler, *, concurrency: int = 64,
                  warmup: float = 0.0, on_measure_start: Callable[[], None] | None = None) -> ReadRecords:
    """Offers `rate` reads a second with Poisson arrivals for `warmup + seconds`, whatever the reads' latency: an
    arrivals thread samples each read's time and key and hands it to a pool of `concurrency` threads, so a slow
    read (a miss) never delays the next arrival, and every system is offered the same reads (same seed: same
    arrival times and keys). Latency counts from the read's arrival (a read that waited for a free thread pays
    the wait); `late` counts reads that started more than 10 ms after their arrival (the pool was too small).
    Reads arriving in the warm-up are not recorded; `on_measure_start` runs when the window opens."""
    if rate <= 0 or concurrency <= 0:
        raise ValueError("rate and concurrency must be > 0")
    arrivals: queue.SimpleQueue[tuple[float, int, bool] | None] = queue.SimpleQueue()
    per_thread = [ReadRecords() for _ in range(concurrency)]
    late = [0] * concurrency
    start = time.monotonic() + 0.05
    measure_from = start + warmup
    stop_at = measure_from + seconds
    opened = threading.Event()

    def reader(index: int) -> None:
        records = per_thread[index]
        while True:
            item = arrivals.get()
            if item is None:
                return
            due, rank, measured = item
            began = time.monotonic()
            try:
                _, hit = read_fn(rank)
            except Exception as exc:
                if measured:
                    records.errors += 1
                    if records.first_error is None:
                        records.first_error = f"{type(exc).__name__}: {exc}"
                continue
            if measured:
                records.ranks.append(rank)
                records.hits.append(1 if hit else 0)
                records.latencies.append(time.monotonic() - due)
                late[index] += began - due > 0.01

    pool = [threading.Thread(target=reader, args=(i,), name=f"bench-open-{i}", daemon=True)
            for i in range(concurrency)]
    for thread in pool:
        thread.start()
    draw = random.Random(sampler.seed * 7_919 + 17)
    keys = sampler.fork(0)
    at = start
    window_start = measure_from
    while True:
        at += draw.expovariate(rate)
        if at >= stop_at:
            break
        if not opened.is_set() and at >= measure_from:
            delay = measure_from - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            window_start = time.monotonic()
            opened.set()
            if on_measure_start is not None:
                on_measure_start()
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        arrivals.put((at, keys.sample(), at >= measure_from))
    for _ in pool:
        arrivals.put(None)
    for thread in pool:
        thread.join()
    merged = ReadRecords()
    for records in per_thread:
        merged.extend(records)
    merged.seconds = max(stop_at - window_start, 1e-9)
    merged.late = sum(late)
    return merged


def measure_raw_get(redis_url: str, seconds: float, *, threads: int = 1,
                    key: str = "bench:raw-get", cluster: bool = False) -> LatencyStats:
    """Latency of a plain redis-py GET of a small stored JSON value: the reference for read latencies.

    `cluster`: through a RedisCluster client (the URL names one node). Run it with the same number of threads as
    the systems' readers, so that it pays the same GIL and connection-pool contention and only the systems' own
    work shows in the ratio.
    """
    client = (redis.cluster.RedisCluster.from_url(redis_url) if cluster  # type: ignore[assignment]
              else redis.Redis.from_url(redis_url))
    try:
        value = {"id": "0", "name": "Product 0", "price": 1.0, "version": 1, "fetched_at": time.time()}
        client.set(key, json.dumps(value).encode())

        def read(_: int) -> tuple[Any, bool]:
            raw = client.get(key)
            return raw, raw is not None

        for _ in range(200):  # connections and code paths warm
            read(0)
        records = run_readers(read, threads, seconds, ZipfSampler(1))
        client.delete(key)
    finally:
        client.close()
    if records.errors:
        raise RuntimeError(f"raw GET failed {records.errors} times: {records.first_error}")
    return records.latency()


# --------------------------------------------------------------------------------------------------- output


def format_ms(seconds: float, digits: int = 3) -> str:
    return "-" if seconds != seconds else f"{seconds * 1000:.{digits}f}"


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                notes: Sequence[str] = (), print_fn: Callable[[str], None] = print) -> str:
    """Prints a fixed-width table (first column left-aligned, the others right-aligned) and returns the same
    table as markdown, ready for BENCHMARKS.md."""
    cells = [[str(c) for c in row] for row in rows]
    header = [str(c) for c in columns]
    widths = [max(len(header[i]), *(len(r[i]) for r in cells)) if cells else len(header[i])
              for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        rest = zip(values[1:], widths[1:], strict=True)
        parts = [values[0].ljust(widths[0])] + [v.rjust(w) for v, w in rest]
        return "  ".join(parts).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    print_fn("")
    print_fn(title)
    print_fn(rule)
    print_fn(line(header))
    print_fn(rule)
    for row in cells:
        print_fn(line(row))
    print_fn(rule)
    for note in notes:
        print_fn(note)

    def md_row(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    md = [f"### {title}", "", md_row(header), "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    md.extend(md_row(row) for row in cells)
    if notes:
        md.append("")
        md.extend(f"- {note}" for note in notes)
    return "\n".join(md) + "\n"


# --------------------------------------------------------------------------------------------------- CLI


def add_common_args(parser: argparse.ArgumentParser, *, seconds: float = DEFAULT_SECONDS,
                    keys: int = DEFAULT_KEYS, threads: int = DEFAULT_THREADS) -> argparse.ArgumentParser:
    """--seconds, --keys, --threads, --quick, --seed, --markdown. Defaults are filled in by
    `parse_common_args` (so that --quick only changes what was not given explicitly)."""
    parser.set_defaults(_default_seconds=seconds, _default_keys=keys, _default_threads=threads)
    parser.add_argument("--seconds", type=float, default=None,
                        help=f"measured duration (default {seconds:g})")
    parser.add_argument("--keys", type=int, default=None, help=f"number of distinct keys (default {keys})")
    parser.add_argument("--threads", type=int, default=None, help=f"reader threads (default {threads})")
    parser.add_argument("--quick", action="store_true",
                        help=f"short smoke run: {QUICK_SECONDS:g} s, {QUICK_KEYS} keys unless given")
    parser.add_argument("--seed", type=int, default=1, help="seed of the key samplers")
    parser.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    return parser


def parse_common_args(parser: argparse.ArgumentParser,
                      argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = QUICK_SECONDS if args.quick else args._default_seconds
    if args.keys is None:
        args.keys = QUICK_KEYS if args.quick else args._default_keys
    if args.threads is None:
        args.threads = args._default_threads
    if args.seconds <= 0:
        parser.error("--seconds must be > 0")
    if args.keys <= 0:
        parser.error("--keys must be > 0")
    if args.threads <= 0:
        parser.error("--threads must be > 0")
    return args
