"""Invalidation latency benchmark: how soon after a writer publishes is the old value gone, and the new one readable?

A writer commits a change to the source (`POST /_control/bump/{id}`: version + 1) and publishes it, --events times
(default 5,000) at --rate events/s (default 500), round-robin over --keys hot keys (default 200, pinned so they
count as hot). Reader threads read the same keys all the while. A watcher polls Redis (one pipelined GET of every
key with an event in flight, ~1 ms apart) and notes, per event, when the value is gone or newer (publish-to-deleted)
and when a value of the published version or newer is there (publish-to-new-value). Source latency 50 ms over HTTP
(`cachewarm.demo.source` in a child process).

Systems, one after the other on a flushed database of one private redis-server and the same source:
  cachewarm   `publish_invalidation(key, version=v)`; an invalidation consumer (its own process: the workers'
              consumer loop with the refresh engine) applies it fenced and refreshes the hot key straight away
  naive       cache-aside: the writer DELs the key after committing; the next reader misses and reloads
              (GET, on a miss fetch and SET, no lease and no fence)

Columns: p50 / p99 / max of publish-to-deleted and publish-to-new-value (ms); `stale after del`: reads that
started after the event's deletion was seen yet returned an older version than the event's (goal 0);
`stale before del`: reads between publish and deletion that returned the old version (expected: the window);
`src req`: source reads during the run. Goals: publish-to-deleted p99 <= 20 ms; publish-to-new-value p99 <=
source latency + 50 ms.

    PYTHONPATH=. python bench/invalidation_latency.py [--quick] [--events N] [--rate R] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` and `cachewarm` importable from the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx
import redis

from bench.common import format_ms, latency_stats, print_table
from cachewarm import Cache, Settings, envelope, publish_invalidation
from cachewarm.demo.redis_server import RedisServer
from cachewarm.demo.source import SourceProcess
from cachewarm.keys import CONSUMER_GROUP, INVALIDATION_STREAM, KeyLayout

SOURCE_LATENCY = 0.05
EVENT_TIMEOUT = 5.0

CONFIG = """
[keyspaces.product]
pattern = "product:{{id}}"
source = "{url}/products/{{id}}"
ttl = 300
version_field = "version"
"""

CONSUMER = """
import signal, sys, threading
sys.setswitchinterval(float(sys.argv[1]))
from cachewarm import Settings
from cachewarm.invalidation.consumer import HotRefresher, InvalidationConsumer
settings = Settings.load()
refresher = None
if sys.argv[2] == "engine":
    refresher = HotRefresher.for_engine(settings)
elif sys.argv[2] == "cache":
    from cachewarm import Cache
    refresher = HotRefresher.for_cache(Cache(settings=settings))
consumer = InvalidationConsumer(settings, on_hot_keys=refresher).start()
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
print("ready", flush=True)
stop.wait()
consumer.close()
"""


@dataclass
class Rec:
    key: str
    version: int
    t_pub: float
    t_del: float | None = None
    t_new: float | None = None


@dataclass
class Run:
    records: list[Rec] = field(default_factory=list)
    reads: list[tuple[float, str, int]] = field(default_factory=list)  # (start, key, version read)
    source_requests: int = 0
    seconds: float = 0.0


def _version(raw: bytes | None, naive: bool) -> int | None:
    if raw is None:
        return None
    if naive:
        return int(json.loads(raw)["version"])
    return envelope.decode(raw).version


class Watcher(threading.Thread):
    """Stamps, per event, when its key's value is deleted and when a value of its version (or newer) is written.

    It listens to Redis keyspace notifications (DEL and SET of the value keys) rather than polling, so that the
    measurement costs next to no CPU on a machine the system under test shares."""

    def __init__(self, url: str, prefix: str, naive: bool, fence_prefix: str | None = None) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.client.config_set("notify-keyspace-events", "Kgh$")
        self.channel = f"__keyspace@{self.client.connection_pool.connection_kwargs.get('db', 0)}__:"
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(self.channel + prefix + "*")
        self.skip = len(self.channel) + len(prefix)
        self.fence_channel = (self.channel + fence_prefix) if fence_prefix else None
        if self.fence_channel is not None:  # the invalidation script bumps the fence as it deletes
            self.pubsub.psubscribe(self.fence_channel + "*")
        self.naive = naive
        self.lock = threading.Lock()
        self.open: dict[str, Rec] = {}
        self.done = threading.Event()

    def add(self, rec: Rec) -> None:
        with self.lock:
            self.open[rec.key] = rec

    def run(self) -> None:
        while not (self.done.is_set() and (not self.open or time.perf_counter() > self._deadline())):
            message = self.pubsub.get_message(timeout=0.05)
            if message is None:
                continue
            now = time.perf_counter()
            channel = message["channel"].decode()
            fence = self.fence_channel is not None and channel.startswith(self.fence_channel)
            key = channel[len(self.fence_channel):] if fence and self.fence_channel else channel[self.skip:]
            with self.lock:
                rec = self.open.get(key)
            if rec is None:
                continue
            if message["data"] in (b"del", b"hincrby"):
                if rec.t_del is None:
                    rec.t_del = now
                continue
            if fence or message["data"] != b"set":
                continue
            version = _version(self.client.get(message["channel"][len(self.channel):]), self.naive)
            if version is not None and version >= rec.version:
                rec.t_del = rec.t_del or now
                rec.t_new = now
                with self.lock:
                    if self.open.get(key) is rec:
                        del self.open[key]
        self.pubsub.close()
        self.client.close()

    def _deadline(self) -> float:
        with self.lock:
            return max((r.t_pub for r in self.open.values()), default=0.0) + EVENT_TIMEOUT


def _readers(n: int, keys: list[str], read: Callable[[str], int | None], stop: threading.Event,
             out: list[tuple[float, str, int]]) -> list[threading.Thread]:
    def loop(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[tuple[float, str, int]] = []
        while not stop.is_set():
            key = keys[rng.randrange(len(keys))]
            started = time.perf_counter()
            try:
                version = read(key)
            except Exception:
                continue
            if version is not None:
                mine.append((started, key, version))
            time.sleep(0.005)
        out.extend(mine)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads


def _drive(source: SourceProcess, keys: list[str], events: int, rate: float, watcher: Watcher,
           invalidate: Callable[[str, int], None], stamp_deleted: bool) -> float:
    """Commits and invalidates `events` times at `rate`/s, round-robin over the keys; returns the seconds taken."""
    started = time.perf_counter()
    http = httpx.Client(base_url=source.url, timeout=10)
    try:
        for n in range(events):
            due = started + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            key = keys[n % len(keys)]
            version = int(http.post(f"/_control/bump/{key.split(':', 1)[1]}").json()["version"])
            rec = Rec(key, version, time.perf_counter())
            watcher.add(rec)
            invalidate(key, version)
            if stamp_deleted:
                rec.t_del = time.perf_counter()
            watcher_records.append(rec)
    finally:
        http.close()
    return time.perf_counter() - started


watcher_records: list[Rec] = []


def run_cachewarm(server: RedisServer, source: SourceProcess, config: Path, args: argparse.Namespace) -> Run:
    url = server.url(0)
    settings = Settings.load(redis_url=url, config=config)
    layout = KeyLayout(settings.key_prefix)
    client = redis.Redis.from_url(url)
    client.flushdb()
    keys = [f"product:{i}" for i in range(args.keys)]
    client.sadd(layout.pinned("product"), *keys)
    client.xgroup_create(INVALIDATION_STREAM, CONSUMER_GROUP, id="$", mkstream=True)
    env = {**os.environ, "CACHEWARM_REDIS_URL": url, "CACHEWARM_CONFIG": str(config),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    consumer = subprocess.Popen([sys.executable, "-c", CONSUMER, str(args.switch_interval), args.refresher], env=env,
                                stdout=subprocess.PIPE)
    assert consumer.stdout is not None and consumer.stdout.readline().strip() == b"ready"
    cache = Cache(settings=settings)
    try:
        for key in keys:
            cache.get(key)
        return _measure(client, source, keys, args, naive=False, value_key=layout.value,
                        fence_prefix=layout.fence_prefix,
                        read=lambda key: int(cache.get(key)["version"]),
                        invalidate=lambda key, version: publish_invalidation(key, version=version, redis=client,
                                                                             settings=settings))
    finally:
        consumer.terminate()
        consumer.wait(10)
        cache.close()
        client.close()


def run_naive(server: RedisServer, source: SourceProcess, args: argparse.Namespace) -> Run:
    client = redis.Redis.from_url(server.url(0))
    client.flushdb()
    keys = [f"product:{i}" for i in range(args.keys)]
    http = httpx.Client(base_url=source.url, timeout=10, limits=httpx.Limits(max_connections=50))

    def value_key(key: str) -> str:
        return "naive:" + key

    def read(key: str) -> int:
        raw = client.get(value_key(key))
        if raw is None:
            raw = http.get(f"/products/{key.split(':', 1)[1]}").content
            client.set(value_key(key), raw, ex=300)
        return int(json.loads(raw)["version"])

    try:
        for key in keys:
            read(key)
        return _measure(client, source, keys, args, naive=True, value_key=value_key, read=read,
                        invalidate=lambda key, version: client.delete(value_key(key)) and None)
    finally:
        http.close()
        client.close()


def _measure(client: redis.Redis, source: SourceProcess, keys: list[str], args: argparse.Namespace, *,
             naive: bool, value_key: Callable[[str], str], read: Callable[[str], int | None],
             fence_prefix: str | None = None,
             invalidate: Callable[[str, int], None]) -> Run:
    run = Run()
    watcher_records.clear()
    watcher = Watcher(_url(client), value_key(""), naive, fence_prefix)
    watcher.start()
    stop = threading.Event()
    readers = _readers(args.readers, keys, read, stop, run.reads)
    source.reset_stats()
    run.seconds = _drive(source, keys, args.events, args.rate, watcher, invalidate, stamp_deleted=naive)
    watcher.done.set()
    watcher.join(EVENT_TIMEOUT + 5)
    stop.set()
    for t in readers:
        t.join(10)
    run.source_requests = int(source.stats()["requests"])
    run.records = list(watcher_records)
    return run


def _url(client: redis.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    return f"redis://{kw.get('host', '127.0.0.1')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def _stale_reads(run: Run) -> tuple[int, int]:
    """(reads that started after an event's deletion and returned an older version, reads between publish and
    deletion that returned the old version)."""
    by_key: dict[str, list[Rec]] = {}
    for rec in run.records:
        by_key.setdefault(rec.key, []).append(rec)
    after = before = 0
    for started, key, version in run.reads:
        newest_deleted = max((r.version for r in by_key.get(key, ()) if r.t_del is not None and r.t_del <= started),
                             default=None)
        if newest_deleted is not None and version < newest_deleted:
            after += 1
            continue
        if any(r.t_pub <= started and (r.t_del is None or started < r.t_del) and version < r.version
               for r in by_key.get(key, ())):
            before += 1
    return after, before


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=500.0, help="events per second")
    parser.add_argument("--keys", type=int, default=200, help="hot keys the events go round")
    parser.add_argument("--readers", type=int, default=2, help="reader threads")
    parser.add_argument("--quick", action="store_true", help="1,000 events")
    parser.add_argument("--systems", default="cachewarm,naive")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--refresher", choices=["engine", "cache", "none"], default="engine",
                        help="how the consumer refreshes hot keys: the workers' refresh engine (default), reads "
                             "through a Cache in a thread pool, or not at all (deletion latency alone)")
    parser.add_argument("--switch-interval", type=float, default=0.0005,
                        help="sys.setswitchinterval of the bench and consumer processes (Python's 5 ms default "
                             "makes an I/O thread wait behind a busy one)")
    args = parser.parse_args(argv)
    sys.setswitchinterval(args.switch_interval)
    if args.quick:
        args.events = min(args.events, 1000)
    rows = []
    with RedisServer() as server, SourceProcess(latency=SOURCE_LATENCY, items=max(args.keys, 1000)) as source, \
            tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "cachewarm.toml"
        config.write_text(CONFIG.format(url=source.url))
        for system in args.systems.split(","):
            run = (run_cachewarm(server, source, config, args) if system == "cachewarm"
                   else run_naive(server, source, args))
            deleted = latency_stats([r.t_del - r.t_pub for r in run.records if r.t_del is not None])
            new = latency_stats([r.t_new - r.t_pub for r in run.records if r.t_new is not None])
            missing = sum(1 for r in run.records if r.t_new is None)
            after, before = _stale_reads(run)
            rows.append([system, f"{len(run.records)} ({len(run.records) / run.seconds:.0f}/s)",
                         format_ms(deleted.p50, 1), format_ms(deleted.p99, 1), format_ms(deleted.max, 1),
                         format_ms(new.p50, 1), format_ms(new.p99, 1), format_ms(new.max, 1), missing,
                         len(run.reads), after, before, run.source_requests])
    md = print_table(
        f"Invalidation latency: {args.events} events at {args.rate:g}/s over {args.keys} hot keys, "
        f"source {SOURCE_LATENCY * 1000:g} ms",
        ["system", "events", "del p50", "del p99", "del max", "new p50", "new p99", "new max", "no new",
         "reads", "stale after del", "stale before del", "src req"], rows,
        notes=["times in ms from publish (the naive writer's DEL) to deleted / to new value readable",
               f"goals: del p99 <= 20 ms; new p99 <= {SOURCE_LATENCY * 1000 + 50:g} ms; stale after del = 0"])
    if args.markdown:
        print()
        print(md)


if __name__ == "__main__":
    main()
