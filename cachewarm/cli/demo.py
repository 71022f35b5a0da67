"""`cachewarm demo`: the product tour on one machine, ending by itself.

Starts a private redis-server (unless CACHEWARM_REDIS_URL is set), the slow demo source in a child process, a
temporary cachewarm.toml, `cachewarm run` (worker, beat, invalidation consumer and metrics endpoint) as a child,
and a Zipf-distributed reader load in threads through `Cache`. It prints a legend, then every second the hit ratio,
read p99, the source requests it served beside what plain cache-aside (same TTL, no workers) would have asked for
the same reads, and the refreshes; halfway, one invalidation end to end (published, deleted, a new value, with the
times); at the end a summary and a few values scraped from the metrics endpoint before it stopped.
"""

from __future__ import annotations

import bisect
import itertools
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import httpx
import redis

from ..client import Cache
from ..demo.redis_server import RedisServer, free_port
from ..demo.source_process import SourceProcess
from ..invalidation.publish import publish_invalidation
from ..redis_layer import envelope
from ..redis_layer.keys import KeyLayout
from ..settings import Settings

HALF_LIFE = 10.0
THRESHOLD = 2.0
FOLLOW_SECONDS = 10.0  # how long the demo's invalidation is followed through Redis


LEGEND = """\
  t             seconds since the readers started ({threads} threads, Zipf 1.1 over {nkeys:,} product keys)
  reads/s       reads this second
  hit %         reads answered from Redis
  p99 ms        the slowest 1 % of the reads
  source req/s  requests the source served: the readers' misses plus the workers' refreshes
  cache-aside   what plain cache-aside (same {ttl:g} s TTL, no workers) would have asked the source for these reads
  refreshes/s   keys the workers refreshed before their TTL ran out
  hot keys      the keys the workers keep warm (read often enough lately)
Source requests rise as keys turn hot: each hot key is refreshed every {period:g} s (TTL - refresh_ahead), read or
not; that load is what buys the hit ratio. The cache-aside column is the price of not warming."""


class CacheAside:
    """Plain cache-aside on the same reads: a key read again within `ttl` of its last load is a hit, else a load."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.loaded: dict[str, float] = {}

    def read(self, key: str, now: float) -> bool:
        """True when cache-aside would have asked the source for this read."""
        last = self.loaded.get(key)
        if last is not None and now - last < self.ttl:
            return False
        self.loaded[key] = now
        return True


class Window:
    """Reads of the current second, swapped out by the printer."""

    def __init__(self, ttl: float) -> None:
        self.lock = threading.Lock()
        self.hits = 0
        self.reads = 0
        self.aside_loads = 0
        self.latencies: list[float] = []
        self.errors = 0
        self.aside = CacheAside(ttl)

    def add(self, key: str, hit: bool, seconds: float) -> None:
        with self.lock:
            self.reads += 1
            self.hits += hit
            self.aside_loads += self.aside.read(key, time.monotonic())
            self.latencies.append(seconds)

    def take(self) -> tuple[int, int, int, list[float], int]:
        with self.lock:
            out = (self.reads, self.hits, self.aside_loads, self.latencies, self.errors)
            self.reads = self.hits = self.aside_loads = self.errors = 0
            self.latencies = []
        return out


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _reader(cache: Cache, cdf: list[float], seed: int, stop: threading.Event, window: Window) -> None:
    rnd = random.Random(seed)
    while not stop.is_set():
        key = f"product:{bisect.bisect_left(cdf, rnd.random())}"
        started = time.perf_counter()
        try:
            hit = cache.lookup(key).hit
        except Exception:
            with window.lock:
                window.errors += 1
            time.sleep(0.01)
            continue
        window.add(key, hit, time.perf_counter() - started)


def _zipf_cdf(n: int, s: float) -> list[float]:
    weights = [(i + 1) ** -s for i in range(n)]
    total = sum(weights)
    cdf = list(itertools.accumulate(w / total for w in weights))
    cdf[-1] = 1.0
    return cdf


@click.command()
@click.option("--duration", type=float, default=30.0, show_default=True, help="seconds of reader load")
@click.option("--threads", type=int, default=4, show_default=True, help="reader threads")
@click.option("--keys", "nkeys", type=int, default=1000, show_default=True, help="distinct product keys")
@click.option("--latency", type=float, default=0.05, show_default=True, help="source latency (s)")
@click.option("--ttl", type=float, default=10.0, show_default=True)
@click.option("--refresh-ahead", type=float, default=3.0, show_default=True)
def demo(duration: float, threads: int, nkeys: int, latency: float, ttl: float, refresh_ahead: float) -> None:
    """Start everything, read under a Zipf load, show the cache warming up live; ends by itself."""
    if not 0 <= refresh_ahead < ttl:
        raise click.BadParameter("must be >= 0 and < --ttl", param_hint="--refresh-ahead")
    given_url = os.environ.get("CACHEWARM_REDIS_URL")
    server: RedisServer | None = None
    with tempfile.TemporaryDirectory(prefix="cachewarm-demo-") as tmp:
        try:
            if given_url:
                redis_url = given_url
                broker_url = os.environ.get("CACHEWARM_BROKER_URL") or Settings.load(redis_url=given_url).broker_url
                click.echo(f"redis: using CACHEWARM_REDIS_URL ({Settings.load(redis_url=given_url).redis_url})")
            else:
                server = RedisServer().start()
                redis_url, broker_url = server.url(0), server.url(1)
                click.echo(f"redis: private redis-server on port {server.port}")
            _tour(Path(tmp), redis_url, broker_url, duration=duration, threads=threads, nkeys=nkeys,
                  latency=latency, ttl=ttl, refresh_ahead=refresh_ahead)
        finally:
            if server is not None:
                server.cleanup()


def _tour(tmp: Path, redis_url: str, broker_url: str, *, duration: float, threads: int, nkeys: int,
          latency: float, ttl: float, refresh_ahead: float) -> None:
    metrics_port = int(os.environ.get("CACHEWARM_METRICS_PORT") or free_port())
    metrics_host = os.environ.get("CACHEWARM_METRICS_HOST", "127.0.0.1")
    with SourceProcess(latency=latency, items=max(nkeys, 100_000)) as source:
        click.echo(f"source: {source.url} (latency {latency * 1000:g} ms)")
        config = tmp / "cachewarm.toml"
        config.write_text(f'[keyspaces.product]\npattern = "product:{{id}}"\nsource = "{source.url}/products/{{id}}"'
                          f"\nttl = {ttl}\nrefresh_ahead = {refresh_ahead}\nmax_stale = 30\n"
                          'version_field = "version"\n')  # its bodies hold a fetch time: compared by version
        env = {**os.environ, "CACHEWARM_REDIS_URL": redis_url, "CACHEWARM_BROKER_URL": broker_url,
               "CACHEWARM_CONFIG": str(config), "CACHEWARM_SCAN_INTERVAL": "0.5",
               "CACHEWARM_HOT_HALF_LIFE": str(HALF_LIFE), "CACHEWARM_HOT_THRESHOLD": str(THRESHOLD),
               "CACHEWARM_METRICS_PORT": str(metrics_port), "CACHEWARM_METRICS_HOST": metrics_host}
        settings = Settings.load(redis_url=redis_url, broker_url=broker_url, config=config, scan_interval=0.5,
                                 hot_half_life=HALF_LIFE, hot_threshold=THRESHOLD)
        client = redis.Redis.from_url(redis_url)
        layout = KeyLayout(settings.key_prefix)
        log = open(tmp / "run.log", "wb")  # noqa: SIM115 - handed to the child
        command = [sys.executable, "-c", "from cachewarm.cli import main; main()", "run", "--loglevel", "WARNING"]
        runner = subprocess.Popen(command, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        log.close()
        click.echo(f"cachewarm run: pid {runner.pid}; metrics endpoint http://{metrics_host}:{metrics_port}/metrics")
        cache = Cache(settings=settings)
        stop = threading.Event()
        window = Window(ttl)
        cdf = _zipf_cdf(nkeys, 1.1)
        readers = [threading.Thread(target=_reader, args=(cache, cdf, i + 1, stop, window), daemon=True)
                   for i in range(threads)]
        totals = {"reads": 0, "hits": 0, "source": 0, "aside": 0, "refreshes": 0}
        last_lat: list[float] = []
        invalidate_at = max(2, int(duration // 2))
        follower: threading.Thread | None = None
        try:
            source.reset_stats()
            for t in readers:
                t.start()
            click.echo(LEGEND.format(threads=threads, nkeys=nkeys, ttl=ttl, period=ttl - refresh_ahead))
            click.echo(f"{'t':>4}  {'reads/s':>8}  {'hit %':>6}  {'p99 ms':>7}  {'source req/s':>12}  "
                       f"{'cache-aside':>11}  {'refreshes/s':>11}  {'hot keys':>8}")
            prev_source, prev_refreshed = 0, 0
            start = time.monotonic()
            for second in itertools.count(1):
                time.sleep(max(0.0, start + second - time.monotonic()))
                reads, hits, aside, lats, errors = window.take()
                src = int(source.stats()["requests"])
                raw: dict[bytes, bytes] = client.hgetall(layout.refresh_stats)  # type: ignore[assignment]
                stats = {k.decode(): v.decode() for k, v in raw.items()}
                refreshed = int(stats.get("refreshed:product", 0))
                hot = stats.get("hot_keys:product", "-")
                totals["reads"] += reads
                totals["hits"] += hits
                totals["aside"] += aside
                if second > duration - 10:
                    last_lat += lats
                ratio = f"{hits / reads * 100:6.2f}" if reads else "     -"
                click.echo(f"{second:>4}  {reads:>8,}  {ratio}  {p99(lats) * 1000:>7.2f}  {src - prev_source:>12,}  "
                           f"{aside:>11,}  {refreshed - prev_refreshed:>11,}  {hot:>8}"
                           + (f"  ({errors} errors)" if errors else ""))
                prev_source, prev_refreshed = src, refreshed
                if runner.poll() is not None:
                    click.echo(f"cachewarm run exited with {runner.returncode}; see its log:", err=True)
                    click.echo((tmp / "run.log").read_text(errors="replace")[-2000:], err=True)
                    break
                if second == invalidate_at:  # followed in a thread: the table goes on meanwhile
                    follower = threading.Thread(
                        target=lambda: click.echo(_invalidate_one(client, layout, "product:0")), daemon=True)
                    follower.start()
                if second >= duration:
                    break
            totals["source"], totals["refreshes"] = prev_source, prev_refreshed
        finally:
            if follower is not None:
                follower.join(FOLLOW_SECONDS)
            stop.set()
            for t in readers:
                t.join(10)
            cache.close()
        metrics = _scrape(metrics_host, metrics_port)
        _stop(runner)
        client.close()
    overall = totals["hits"] / totals["reads"] * 100 if totals["reads"] else float("nan")
    aside_ratio = (1 - totals["aside"] / totals["reads"]) * 100 if totals["reads"] else float("nan")
    click.echo("")
    click.echo(f"summary: {totals['reads']:,} reads, hit ratio {overall:.2f}% overall, read p99 "
               f"{p99(last_lat) * 1000:.2f} ms over the last 10 s; {totals['source']:,} source requests, "
               f"{totals['refreshes']:,} of them refreshes by the workers; plain cache-aside on the same reads: "
               f"hit ratio {aside_ratio:.2f}% for {totals['aside']:,} source requests")
    if metrics is None:
        click.echo("metrics endpoint: not reachable before it stopped (see `cachewarm run`'s log)")
    else:
        click.echo(f"metrics scraped from http://{metrics_host}:{metrics_port}/metrics before it stopped with the "
                   "demo:")
        for line in metrics:
            click.echo(f"  {line}")


def _invalidate_one(client: redis.Redis, layout: KeyLayout, key: str) -> str:
    """Publishes an invalidation of `key` (the hottest) as a writer would and follows it through Redis: when the
    value was deleted, when a new one was stored (the workers refresh a hot key at once; a reader's miss may be
    first). One line."""
    before = client.get(layout.value(key))
    old = envelope.fetched_ms(before) if isinstance(before, bytes) else None
    published = time.monotonic()
    publish_invalidation(key, redis=client)
    deleted: float | None = None
    while (waited := time.monotonic() - published) < FOLLOW_SECONDS:
        raw = client.get(layout.value(key))
        if raw is None:
            deleted = deleted if deleted is not None else waited
        elif not isinstance(raw, bytes) or envelope.fetched_ms(raw) != old:
            gone = f"deleted after {deleted * 1000:.1f} ms" if deleted is not None else \
                f"deleted and replaced within {waited * 1000:.1f} ms"
            return f"invalidation: {key} published; {gone}; a new value stored after {waited * 1000:.1f} ms"
        time.sleep(0.0005)
    gone = f"deleted after {deleted * 1000:.1f} ms" if deleted is not None else "not deleted"
    return f"invalidation: {key} published; {gone}; no new value within {FOLLOW_SECONDS:g} s"


def _scrape(host: str, port: int) -> list[str] | None:
    try:
        text = httpx.get(f"http://{host}:{port}/metrics", timeout=3.0).text
    except httpx.HTTPError:
        return None
    wanted = ("cachewarm_cache_hits_total", "cachewarm_cache_misses_total", "cachewarm_refreshes_total",
              "cachewarm_hot_keys")
    lines = [line for line in text.splitlines() if line.startswith(wanted)]
    return lines[:8] if lines else ["(no cachewarm_* samples yet)"]


def _stop(runner: subprocess.Popen[bytes]) -> None:
    if runner.poll() is None:
        runner.send_signal(signal.SIGTERM)
        try:
            runner.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
