"""Invalidation latency benchmark: how soon after a writer publishes is the old value gone, and the new one readable?

A writer commits a change to the source (`POST /_control/bump/{id}`: version + 1) and publishes it, --events times
(default 5,000) at --rate events/s (default 500), round-robin over --keys hot keys (default 200, pinned so they
count as hot). Reader threads read the same keys all the while. A watcher in its own process logs Redis keyspace
notifications of the value keys (and of the fence bump) with their times; per event, the first deletion after the
publish (publish-to-deleted) and the first value of the published version or newer (publish-to-new-value).
Source latency 50 ms over HTTP (`cachewarm.demo.source` in a child process).

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
        [--topology standalone|cluster|both]

On a cluster (`--topology cluster`, a private 3-master Redis Cluster) the watcher listens on every master (keyspace
notifications are per node); the stream lives on the master of its slot. Goal on a cluster: p99s within 1.2x of
standalone's (`--topology both` prints the two side by side).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
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
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `cachewarm` importable from the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx
import redis

from bench.common import format_ms, latency_stats, print_table
from bench.topology import (
    CacheServers,
    Figure,
    add_topology_arg,
    cache_servers,
    load_average,
    side_by_side,
    topologies_of,
)
from cachewarm import Cache, envelope, publish_invalidation
from cachewarm.demo.source_process import SourceProcess
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
from cachewarm.invalidation.consumer import InvalidationConsumer
from cachewarm.invalidation.hot_refresh import HotRefresher
from cachewarm.worker.sidecar import engine_refresher
settings = Settings.load()
refresher = None
if sys.argv[2] == "engine":
    refresher = engine_refresher(settings)
elif sys.argv[2] == "cache":
    from cachewarm import Cache
    refresher = HotRefresher.threaded(Cache(settings=settings).lookup)
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


class Watcher:
    """Stamps, per event, when its key's value is deleted and when a value of its version (or newer) is written.

    A child process listens to Redis keyspace notifications (DEL and SET of the value keys, the fence bump of the
    invalidation script) and logs each with its time (time.perf_counter is CLOCK_MONOTONIC, one clock for every
    process of the machine); the events are matched to the log at the end. In its own process, the watcher's
    stamps do not wait for the GIL behind the bench's driver and reader threads."""

    def __init__(self, urls: list[str], prefix: str, naive: bool, fence_prefix: str | None = None) -> None:
        self.naive = naive
        self.records: list[Rec] = []
        # spawn, not fork: this process already runs threads (a source, readers), whose locks a fork would copy held
        context = multiprocessing.get_context("spawn")
        self._parent, child = context.Pipe()
        self._proc = context.Process(
            target=_watch, args=(child, urls, prefix, naive, fence_prefix), daemon=True)

    def start(self) -> None:
        self._proc.start()
        assert self._parent.recv() == "ready"

    def add(self, rec: Rec) -> None:
        self.records.append(rec)

    def finish(self) -> None:
        """Waits until every event has its new value (or EVENT_TIMEOUT passed), then matches the log."""
        deadline = max((r.t_pub for r in self.records), default=0.0) + EVENT_TIMEOUT
        time.sleep(min(0.5, max(0.0, deadline - time.perf_counter())))
        while True:
            self._parent.send(("log", None))
            log: list[tuple[float, str, str, int | None]] = self._parent.recv()
            _match(self.records, log)
            if all(r.t_new is not None for r in self.records) or time.perf_counter() > deadline:
                break
            time.sleep(0.25)
        self._parent.send(("stop", None))
        self._proc.join(10)


def _watch(conn: Any, urls: list[str], prefix: str, naive: bool, fence_prefix: str | None) -> None:
    """Logs the notifications of every node in `urls` (a cluster's masters: notifications are per node)."""
    clients = [redis.Redis.from_url(url) for url in urls]
    subscriptions = []
    for client in clients:
        client.config_set("notify-keyspace-events", "Kgh$")
        db = client.connection_pool.connection_kwargs.get("db", 0)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(f"__keyspace@{db}__:" + prefix + "*")
        if fence_prefix:  # the invalidation script bumps the fence as it deletes
            pubsub.psubscribe(f"__keyspace@{db}__:" + fence_prefix + "*")
        subscriptions.append((client, pubsub, f"__keyspace@{db}__:"))
    # cachewarm's per-key names are P v:{K} (keys.py: the hash tag): the key is what lies between the braces
    suffix = "}" if prefix.endswith("{") else ""
    log: list[tuple[float, str, str, int | None]] = []  # (time, key, del|set, version of a set)
    conn.send("ready")
    while True:
        if conn.poll():
            what, _ = conn.recv()
            if what == "stop":
                break
            conn.send(log)
            log = []
        for client, pubsub, channel in subscriptions:
            message = pubsub.get_message(timeout=0.05 / len(subscriptions))
            if message is None:
                continue
            now = time.perf_counter()
            name = message["channel"].decode()
            fence_channel = channel + fence_prefix if fence_prefix else None
            fence = fence_channel is not None and name.startswith(fence_channel)
            key = name[len(fence_channel):] if fence and fence_channel else name[len(channel) + len(prefix):]
            key = key[:len(key) - len(suffix)] if suffix and key.endswith(suffix) else key
            if message["data"] in (b"del", b"hincrby"):
                log.append((now, key, "del", None))
            elif not fence and message["data"] == b"set":
                log.append((now, key, "set", _version(client.get(name[len(channel):]), naive)))
    for client, pubsub, _ in subscriptions:
        pubsub.close()
        client.close()


def _match(records: list[Rec], log: list[tuple[float, str, str, int | None]]) -> None:
    """Gives each event the first deletion / new value of its key logged after it was published."""
    by_key: dict[str, list[Rec]] = {}
    for rec in records:
        if rec.t_new is None:
            by_key.setdefault(rec.key, []).append(rec)
    for t, key, kind, version in sorted(log):
        for rec in by_key.get(key, ()):
            if t < rec.t_pub or t > rec.t_pub + EVENT_TIMEOUT:  # later than that: counted as no new value
                continue
            if kind == "del":
                if rec.t_del is None:
                    rec.t_del = t
            elif version is not None and version >= rec.version and rec.t_new is None:
                rec.t_del = rec.t_del if rec.t_del is not None else t
                rec.t_new = t


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
    finally:
        http.close()
    return time.perf_counter() - started


def run_cachewarm(servers: CacheServers, source: SourceProcess, config: Path, args: argparse.Namespace) -> Run:
    settings = servers.settings(config=config)
    layout = KeyLayout(settings.key_prefix)
    servers.flush()
    client = servers.client()
    keys = [f"product:{i}" for i in range(args.keys)]
    client.sadd(layout.pinned("product"), *keys)
    client.xgroup_create(INVALIDATION_STREAM, CONSUMER_GROUP, id="$", mkstream=True)
    env = {**os.environ, **servers.env(), "CACHEWARM_CONFIG": str(config),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    consumer = subprocess.Popen([sys.executable, "-c", CONSUMER, str(args.switch_interval), args.refresher], env=env,
                                stdout=subprocess.PIPE)
    assert consumer.stdout is not None and consumer.stdout.readline().strip() == b"ready"
    cache = Cache(settings=settings)
    try:
        for key in keys:
            cache.get(key)
        return _measure(servers, source, keys, args, naive=False, value_key=layout.value,
                        fence_prefix=layout.fence_prefix,
                        read=lambda key: int(cache.get(key)["version"]),
                        invalidate=lambda key, version: publish_invalidation(key, version=version, redis=client,
                                                                             settings=settings))
    finally:
        consumer.terminate()
        consumer.wait(10)
        cache.close()
        client.close()


def run_naive(servers: CacheServers, source: SourceProcess, args: argparse.Namespace) -> Run:
    servers.flush()
    client = servers.client()
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
        return _measure(servers, source, keys, args, naive=True, value_key=value_key, read=read,
                        invalidate=lambda key, version: client.delete(value_key(key)) and None)
    finally:
        http.close()
        client.close()


def _measure(servers: CacheServers, source: SourceProcess, keys: list[str], args: argparse.Namespace, *,
             naive: bool, value_key: Callable[[str], str], read: Callable[[str], int | None],
             fence_prefix: str | None = None,
             invalidate: Callable[[str, int], None]) -> Run:
    run = Run()
    watcher = Watcher(servers.master_urls(), value_key("").removesuffix("}"), naive, fence_prefix)
    watcher.start()
    stop = threading.Event()
    readers = _readers(args.readers, keys, read, stop, run.reads)
    source.reset_stats()
    run.seconds = _drive(source, keys, args.events, args.rate, watcher, invalidate, stamp_deleted=naive)
    watcher.finish()
    stop.set()
    for t in readers:
        t.join(10)
    run.source_requests = int(source.stats()["requests"])
    run.records = watcher.records
    return run


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
    add_topology_arg(parser)
    args = parser.parse_args(argv)
    sys.setswitchinterval(args.switch_interval)
    if args.quick:
        args.events = min(args.events, 1000)
    print(f"before the runs: {load_average()}")
    figures: dict[str, dict[str, float]] = {}
    for topology in topologies_of(args):
        figures[topology] = run_topology(topology, args)
    if len(figures) > 1:
        names = [name for name in figures["standalone"] if name.endswith("ms")]
        side_by_side("Invalidation latency: standalone and cluster",
                     [Figure(name, 1.2 if "p99" in name and "cachewarm" in name else None) for name in names],
                     figures, notes=["goal: the cluster's cachewarm p99s within 1.2x of standalone's",
                                     f"after the runs: {load_average()}"])


def run_topology(topology: str, args: argparse.Namespace) -> dict[str, float]:
    """One topology's table; returns its figures (ms) by name."""
    rows = []
    figures: dict[str, float] = {}
    with cache_servers(topology) as servers, \
            SourceProcess(latency=SOURCE_LATENCY, items=max(args.keys, 1000)) as source, \
            tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "cachewarm.toml"
        config.write_text(CONFIG.format(url=source.url))
        for system in args.systems.split(","):
            run = (run_cachewarm(servers, source, config, args) if system == "cachewarm"
                   else run_naive(servers, source, args))
            deleted = latency_stats([r.t_del - r.t_pub for r in run.records if r.t_del is not None])
            new = latency_stats([r.t_new - r.t_pub for r in run.records if r.t_new is not None])
            missing = sum(1 for r in run.records if r.t_new is None)
            after, before = _stale_reads(run)
            rows.append([system, f"{len(run.records)} ({len(run.records) / run.seconds:.0f}/s)",
                         format_ms(deleted.p50, 1), format_ms(deleted.p99, 1), format_ms(deleted.max, 1),
                         format_ms(new.p50, 1), format_ms(new.p99, 1), format_ms(new.max, 1), missing,
                         len(run.reads), after, before, run.source_requests])
            figures.update({f"{system} del p50 ms": deleted.p50 * 1000, f"{system} del p99 ms": deleted.p99 * 1000,
                            f"{system} new p50 ms": new.p50 * 1000, f"{system} new p99 ms": new.p99 * 1000,
                            f"{system} stale after del": after, f"{system} no new value": missing})
    md = print_table(
        f"Invalidation latency ({topology}): {args.events} events at {args.rate:g}/s over {args.keys} hot keys, "
        f"source {SOURCE_LATENCY * 1000:g} ms",
        ["system", "events", "del p50", "del p99", "del max", "new p50", "new p99", "new max", "no new",
         "reads", "stale after del", "stale before del", "src req"], rows,
        notes=["times in ms from publish (the naive writer's DEL) to deleted / to new value readable",
               f"goals: del p99 <= 20 ms; new p99 <= {SOURCE_LATENCY * 1000 + 50:g} ms; stale after del = 0",
               load_average()])
    if args.markdown:
        print()
        print(md)
    return figures


if __name__ == "__main__":
    main()
