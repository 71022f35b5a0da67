"""Invalidation latency benchmark: how soon after a writer publishes is the old value gone, and the new one readable?

A writer commits a change to the source (version + 1) and publishes it, --events times (default 5,000; or
--seconds x --rate) at --rate events/s (default 500), round-robin over --keys hot keys (default 200, pinned so
they count as hot). Reader threads read the same keys all the while. A watcher in its own process logs Redis
keyspace notifications with their times: per event, publish-to-deleted is to the first fence bump of its key whose
version floor covers the event (cachewarm's invalidation bumps the fence as it deletes; the naive writer's: the
first DEL after the publish), and publish-to-new-value to the first value of the published version or newer.
Source latency 50 ms over HTTP (`cachewarm.demo.source` in a child process).

The driver is one process of its own: every few milliseconds it takes the events that are due, commits them in
one request (`POST /_control/bump` with their ids: each is one writer's commit, done before the response) and
publishes each (the fields `publish_invalidation` writes) in one pipeline: each event still follows its committed
change, and the driver holds well over 2,000 events/s (the previous driver, an HTTP request and a publish per
event in the bench's own process, reached ~100/s under load).

Systems, one after the other on a flushed database of one private redis-server and the same source:
  cachewarm   the writer publishes `key, version, ts`; the node's invalidation consumer applies it fenced and
              the hot key is refreshed straight away. --layout process (default): the sidecar
              (`python -m cachewarm.worker.sidecar`, its refresh engine) with the consumer in its own child
              process (worker/invalidation_process.py), hot keys handed over a pipe; --layout shared: the consumer
              as a thread beside the refresh engine in one process (before issue 12)
  naive       cache-aside: the writer DELs the key after committing; the next reader misses and reloads
              (GET, on a miss fetch and SET, no lease and no fence)

Columns: p50 / p99 / max of publish-to-deleted and publish-to-new-value (ms); `stale after del`: reads that
started after the event's deletion was seen yet returned an older version than the event's (goal 0);
`stale before del`: reads between publish and deletion that returned the old version (expected: the window);
`src/ev`: source reads per event (readers' misses included); `cons ms/ev`: CPU of the consumer's process per
event (user + system); `refr ms/ev`: CPU of the refresher's process (the sidecar) per event; `pending`: the
group's pending + lag (entries not yet acknowledged), sampled every second: first third's median / last third's
median / max, `flat` or `GROWING`. Goals (issue 12): at 500/s del p99 <= 10 ms and new p99 <= 80 ms; at 2,000/s
for 60 s over 1,000 keys del p99 <= 20 ms with the backlog flat.

    python -m bench.invalidation_latency [--quick] [--events N | --seconds S] [--rate R] [--keys K]
        [--markdown] [--layout process|shared] [--refresher engine|cache|none] [--topology standalone|cluster|both]
    python -m bench.invalidation_latency --rate 2000 --seconds 60 --keys 1000 --systems cachewarm
    python -m bench.invalidation_latency --find-max --seconds 20 --keys 1000   # highest sustained rate

`--find-max` runs cachewarm alone at --rates (default 500, 1000, 1500, 2000, 2500, 3000, 4000) and stops at the
first rate that fails: del p99 > 20 ms, the backlog growing, or the driver falling behind (under 97% of the rate).

On a cluster (`--topology cluster`, a private 3-master Redis Cluster) the watcher listens on every master (keyspace
notifications are per node); the stream lives on the master of its slot. Goal on a cluster: p99s within 1.2x of
standalone's (`--topology both` prints the two side by side).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import multiprocessing
import os
import random
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import redis.cluster

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
from cachewarm import Cache
from cachewarm.demo.source_process import SourceProcess
from cachewarm.invalidation.publish import event_fields
from cachewarm.redis_layer import envelope
from cachewarm.redis_layer.keys import CONSUMER_GROUP, INVALIDATION_STREAM, KeyLayout

SOURCE_LATENCY = 0.05
EVENT_TIMEOUT = 5.0
DEL_GOAL_MS = 20.0
NAIVE_PREFIX = "naive:"
FIND_MAX_RATES = "500,1000,1500,2000,2500,3000,4000"
PENDING_INTERVAL = 1.0

CONFIG = """
[keyspaces.product]
pattern = "product:{{id}}"
source = "{url}/products/{{id}}"
ttl = 300
version_field = "version"
"""

# --layout shared: the consumer as a thread beside the refresh engine, in one process (the sidecar before issue 12)
CONSUMER = """
import signal, sys, threading
sys.setswitchinterval(float(sys.argv[1]))
from cachewarm import Settings
from cachewarm.invalidation.consumer import InvalidationConsumer
from cachewarm.warming.hot_refresh import HotRefresher
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
    pending: list[tuple[float, int]] = field(default_factory=list)  # (time, pending + lag of the group)
    consumer_cpu: float | None = None  # seconds of CPU of the consumer's process over the run
    refresher_cpu: float | None = None  # of the refresher's process (the sidecar), when it is another one


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
    stamps do not wait for the GIL behind the bench's reader threads. The values of the SETs it saw are read in
    one pipeline per drain of the notifications (a GET per SET took a round trip each: too slow at 2,000/s)."""

    def __init__(self, urls: list[str], prefix: str, naive: bool, fence_prefix: str | None = None) -> None:
        self.naive = naive
        self.by_bump = fence_prefix is not None  # cachewarm: an event's deletion is its invalidation's fence bump
        self.records: list[Rec] = []
        # spawn, not fork: this process already runs threads (a source, readers), whose locks a fork would copy held
        context = multiprocessing.get_context("spawn")
        self._parent, child = context.Pipe()
        self._proc = context.Process(
            target=_watch, args=(child, urls, prefix, naive, fence_prefix), daemon=True)

    def start(self) -> None:
        self._proc.start()
        assert self._parent.recv() == "ready"

    def finish(self) -> None:
        """Waits until every event has its new value (or EVENT_TIMEOUT passed), then matches the log."""
        deadline = max((r.t_pub for r in self.records), default=0.0) + EVENT_TIMEOUT
        time.sleep(min(0.5, max(0.0, deadline - time.perf_counter())))
        waiting = [r for r in self.records if r.t_new is None or r.t_del is None]
        while True:
            self._parent.send(("log", None))
            log: list[tuple[float, str, str, int | None]] = self._parent.recv()
            _match(waiting, log, self.by_bump)
            waiting = [r for r in waiting if r.t_new is None or r.t_del is None]
            if not waiting or time.perf_counter() > deadline:
                break
            time.sleep(0.25)
        self._parent.send(("stop", None))
        self._proc.join(10)


def _watch(conn: Any, urls: list[str], prefix: str, naive: bool, fence_prefix: str | None) -> None:
    """Logs the notifications of every node in `urls` (a cluster's masters: notifications are per node)."""
    clients = [redis.Redis.from_url(url) for url in urls]
    subscriptions = []
    for client in clients:
        # cachewarm: fence bumps (h) and value SETs ($); naive: DELs (g) and SETs. Nothing more: the watcher must
        # keep up with every notification at 2,000 events/s
        client.config_set("notify-keyspace-events", "Kh$" if fence_prefix else "Kg$")
        db = client.connection_pool.connection_kwargs.get("db", 0)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(f"__keyspace@{db}__:" + prefix + "*")
        if fence_prefix:  # the invalidation script bumps the fence as it deletes
            pubsub.psubscribe(f"__keyspace@{db}__:" + fence_prefix + "*")
        subscriptions.append((client, pubsub, f"__keyspace@{db}__:"))
    # cachewarm's per-key names are P v:{K} (keys.py: the hash tag): the key is what lies between the braces
    suffix = "}" if prefix.endswith("{") else ""
    log: list[tuple[float, str, str, int | None]] = []  # (time, key, del|set, version of a set)
    full = False  # the last drain of some node stopped at 200 messages
    conn.send("ready")
    while True:
        if conn.poll():
            what, _ = conn.recv()
            if what == "stop":
                break
            conn.send(log)
            log = []
        # Wait on every node's socket at once (select): polling them in turn, 16 ms each, stamped a cluster's
        # notifications up to ~33 ms late (issue 29). A drain cut at 200 messages may leave some in redis-py's
        # buffer, where select cannot see them: then no wait.
        if not full:
            socks = {sock: i for i, (_, pubsub, _) in enumerate(subscriptions)
                     if (sock := getattr(pubsub.connection, "_sock", None)) is not None}
            readable, _, _ = select.select(list(socks), [], [], 0.05)
            ready = [subscriptions[socks[sock]] for sock in readable] or subscriptions
        else:
            ready = subscriptions
        full = False
        for client, pubsub, channel in ready:
            sets: list[tuple[float, str, str]] = []  # (time, key, value key) of this drain's SETs
            bumps: list[tuple[float, str, str]] = []  # (time, key, fence key) of its fence bumps
            message = pubsub.get_message(timeout=0)
            drained = 0
            while message is not None and drained < 200:  # the SETs' values read soon after their notifications
                drained += 1
                now = time.perf_counter()
                name = message["channel"].decode()
                fence_channel = channel + fence_prefix if fence_prefix else None
                fence = fence_channel is not None and name.startswith(fence_channel)
                key = name[len(fence_channel):] if fence and fence_channel else name[len(channel) + len(prefix):]
                key = key[:len(key) - len(suffix)] if suffix and key.endswith(suffix) else key
                if fence and message["data"] == b"hincrby":  # an invalidation bumped the key's fence generation
                    bumps.append((now, key, name[len(channel):]))
                elif message["data"] in (b"del", b"hincrby"):
                    log.append((now, key, "del", None))
                elif not fence and message["data"] == b"set":
                    sets.append((now, key, name[len(channel):]))
                message = pubsub.get_message(timeout=0) if drained < 200 else None
            full = full or drained >= 200
            if sets or bumps:
                pipe = client.pipeline(transaction=False)
                for _, _, value_key in sets:
                    pipe.get(value_key)
                for _, _, fence_key in bumps:
                    pipe.hget(fence_key, "v")  # the version floor the invalidation raised: which event it was
                replies = pipe.execute()
                for (t, key, _), raw in zip(sets, replies, strict=False):
                    log.append((t, key, "set", _version(raw, naive)))
                for (t, key, _), floor in zip(bumps, replies[len(sets):], strict=True):
                    log.append((t, key, "bump", int(floor) if floor is not None else None))
    for client, pubsub, _ in subscriptions:
        pubsub.close()
        client.close()


def _match(records: list[Rec], log: list[tuple[float, str, str, int | None]], by_bump: bool) -> None:
    """Gives each event its deletion and the first new value of its key logged after it was published.

    cachewarm's deletion of an event is the first fence bump of its key whose version floor (read by the watcher
    just after the bump) covers the event's version: the first deletion after the publish would be an earlier
    event's when the consumer runs behind by more than a key's events are apart. The naive writer's is the first
    DEL after the publish."""
    by_key: dict[str, list[Rec]] = {}
    for rec in sorted(records, key=lambda r: r.t_pub):
        if rec.t_new is None or rec.t_del is None:
            by_key.setdefault(rec.key, []).append(rec)
    for t, key, kind, floor in sorted(log):
        if kind == "bump" and floor is not None:
            for rec in by_key.get(key, ()):
                if rec.t_del is None and rec.version <= floor and rec.t_pub <= t:
                    rec.t_del = t
    starts = {key: [r.t_pub for r in recs] for key, recs in by_key.items()}
    for t, key, kind, version in sorted(log):
        recs = by_key.get(key)
        if not recs or kind == "bump":
            continue
        # the events of this key published at or before t, and not more than EVENT_TIMEOUT before it
        for i in range(bisect.bisect_right(starts[key], t) - 1, -1, -1):
            rec = recs[i]
            if t > rec.t_pub + EVENT_TIMEOUT:  # later than that: counted as no new value
                break
            if kind == "del":
                if rec.t_del is None and not by_bump:
                    rec.t_del = t
            elif version is not None and version >= rec.version and rec.t_new is None:
                if not by_bump:
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


def _driver(conn: Any, redis_url: str, cluster: bool, source_url: str, keys: list[str], events: int, rate: float,
            naive: bool, maxlen: int, batch_max: int) -> None:
    """The writers, in a process of their own: each event is committed to the source, then published (cachewarm:
    the fields publish_invalidation writes; naive: a DEL of the key). The events due at each turn are committed in
    one request and published in one pipeline. Sends back (key, version, publish time, DEL returned) per event."""
    client: Any = (redis.cluster.RedisCluster.from_url(redis_url) if cluster else redis.Redis.from_url(redis_url))
    http = httpx.Client(base_url=source_url, timeout=10)
    out: list[tuple[str, int, float, float | None]] = []
    conn.send("ready")
    started = conn.recv()  # the common start (perf_counter: one clock for every process of the machine)
    n = 0
    try:
        while n < events:
            due = min(events, int((time.perf_counter() - started) * rate) + 1)  # events with n / rate <= now
            if due <= n:
                time.sleep(max(0.0, started + n / rate - time.perf_counter()))
                continue
            batch = [keys[i % len(keys)] for i in range(n, min(due, n + batch_max))]
            reply = http.post("/_control/bump", json={"ids": [k.split(":", 1)[1] for k in batch]})
            versions: list[int] = reply.json()["versions"]
            pipe = client.pipeline(transaction=False)
            if naive:
                for key in batch:
                    pipe.delete(NAIVE_PREFIX + key)
            else:
                ts = int(time.time() * 1000)
                for key, version in zip(batch, versions, strict=True):
                    pipe.xadd(INVALIDATION_STREAM, event_fields(key, version=version, ts_ms=ts),  # type: ignore[arg-type]
                              maxlen=maxlen, approximate=True)
            t_pub = time.perf_counter()
            pipe.execute()
            t_done = time.perf_counter() if naive else None
            out.extend((key, version, t_pub, t_done) for key, version in zip(batch, versions, strict=True))
            n += len(batch)
        conn.send((out, time.perf_counter() - started))
    finally:
        http.close()
        client.close()


def _drive(servers: CacheServers, source: SourceProcess, keys: list[str], events: int, rate: float, naive: bool,
           maxlen: int, batch_max: int) -> tuple[list[Rec], float]:
    """Runs the driver process; returns the events (publish time stamped) and the seconds the publishing took."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    proc = context.Process(target=_driver, args=(child, servers.redis_url, servers.cluster, source.url, keys,
                                                 events, rate, naive, maxlen, batch_max), daemon=True)
    proc.start()
    try:
        assert parent.recv() == "ready"
        parent.send(time.perf_counter() + 0.05)
        out, seconds = parent.recv()
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    return [Rec(key, version, t_pub, t_del) for key, version, t_pub, t_del in out], seconds


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU of a process (all its threads), from /proc."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    return found


def _sample_pending(client: redis.Redis, stop: threading.Event, out: list[tuple[float, int]]) -> None:
    """The group's pending + lag (entries read and not acknowledged, and entries not read yet), every second."""
    while not stop.wait(PENDING_INTERVAL):
        with contextlib.suppress(redis.RedisError):
            groups: Any = client.xinfo_groups(INVALIDATION_STREAM)
            for group in groups:
                if group["name"] in (CONSUMER_GROUP, CONSUMER_GROUP.encode()):
                    out.append((time.perf_counter(), int(group["pending"]) + int(group.get("lag") or 0)))


class NodeProcesses:
    """The consumer (and refresher) processes of one cachewarm run, as --layout and --refresher say."""

    def __init__(self, args: argparse.Namespace, env: dict[str, str], client: redis.Redis) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.consumer_pid: int | None = None
        self.refresher_pid: int | None = None
        quiet = ["--no-metrics", "--loglevel", "WARNING"]
        if args.layout == "shared" or args.refresher == "cache":
            proc = subprocess.Popen([sys.executable, "-c", CONSUMER, str(args.switch_interval), args.refresher],
                                    env=env, stdout=subprocess.PIPE)
            self.procs.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
            self.consumer_pid = proc.pid
        elif args.refresher == "none":
            proc = subprocess.Popen([sys.executable, "-m", "cachewarm.worker.invalidation_process", *quiet], env=env)
            self.procs.append(proc)
            self.consumer_pid = proc.pid
        else:  # the node's sidecar: refresh engine here, the consumer in its child process
            proc = subprocess.Popen([sys.executable, "-m", "cachewarm.worker.sidecar", *quiet], env=env)
            self.procs.append(proc)
            self.refresher_pid = proc.pid
        deadline = time.monotonic() + 60
        while True:  # until the consumer is in the group (and, with a sidecar, its child is known)
            if self.consumer_pid is None:
                children = _children(proc.pid)
                self.consumer_pid = children[0] if children else None
            with contextlib.suppress(redis.ResponseError):
                if self.consumer_pid is not None and client.xinfo_consumers(INVALIDATION_STREAM, CONSUMER_GROUP):
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                self.close()
                raise RuntimeError("the invalidation consumer did not start")
            time.sleep(0.05)

    def cpu(self) -> tuple[float | None, float | None]:
        return _cpu_seconds(self.consumer_pid), _cpu_seconds(self.refresher_pid)

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _warm(keys: list[str], read: Callable[[str], object]) -> None:
    with ThreadPoolExecutor(50) as pool:
        list(pool.map(read, keys))


# cachewarm's A/B baselines: the same code with a lever switched off by its bench-only variable (issue 29)
VARIANTS = {"cachewarm": {}, "cachewarm-per-key": {"CWBENCH_NODE_GROUPS": "off"}}


def run_cachewarm(servers: CacheServers, source: SourceProcess, config: Path, args: argparse.Namespace,
                  extra_env: dict[str, str] | None = None) -> Run:
    settings = servers.settings(config=config)
    layout = KeyLayout(settings.key_prefix)
    servers.flush()
    client = servers.client()
    keys = [f"product:{i}" for i in range(args.keys)]
    client.sadd(layout.pinned("product"), *keys)
    client.xgroup_create(INVALIDATION_STREAM, CONSUMER_GROUP, id="$", mkstream=True)
    env = {**os.environ, **servers.env(), "CACHEWARM_CONFIG": str(config),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **(extra_env or {})}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    node = NodeProcesses(args, env, client)
    cache = Cache(settings=settings)
    try:
        _warm(keys, cache.get)
        return _measure(servers, source, keys, args, naive=False, value_key=layout.value,
                        fence_prefix=layout.fence_prefix, read=lambda key: int(cache.get(key)["version"]),
                        maxlen=settings.stream_maxlen, node=node, client=client)
    finally:
        node.close()
        cache.close()
        client.close()


def run_naive(servers: CacheServers, source: SourceProcess, args: argparse.Namespace) -> Run:
    servers.flush()
    client = servers.client()
    keys = [f"product:{i}" for i in range(args.keys)]
    http = httpx.Client(base_url=source.url, timeout=10, limits=httpx.Limits(max_connections=50))

    def value_key(key: str) -> str:
        return NAIVE_PREFIX + key

    def read(key: str) -> int:
        raw = client.get(value_key(key))
        if raw is None:
            raw = http.get(f"/products/{key.split(':', 1)[1]}").content
            client.set(value_key(key), raw, ex=300)
        return int(json.loads(raw)["version"])

    try:
        _warm(keys, read)
        return _measure(servers, source, keys, args, naive=True, value_key=value_key, read=read, maxlen=0)
    finally:
        http.close()
        client.close()


def _measure(servers: CacheServers, source: SourceProcess, keys: list[str], args: argparse.Namespace, *,
             naive: bool, value_key: Callable[[str], str], read: Callable[[str], int | None], maxlen: int,
             fence_prefix: str | None = None, node: NodeProcesses | None = None,
             client: redis.Redis | None = None) -> Run:
    run = Run()
    watcher = Watcher(servers.master_urls(), value_key("").removesuffix("}"), naive, fence_prefix)
    watcher.start()
    stop = threading.Event()
    readers = _readers(args.readers, keys, read, stop, run.reads)
    sampler = None
    if client is not None:
        sampler = threading.Thread(target=_sample_pending, args=(client, stop, run.pending), daemon=True)
        sampler.start()
    source.reset_stats()
    cpu_before = node.cpu() if node is not None else (None, None)
    watcher.records, run.seconds = _drive(servers, source, keys, args.events, args.rate, naive, maxlen,
                                          args.batch_max)
    stop.set()  # readers and sampler: the publishing is over
    watcher.finish()
    cpu_after = node.cpu() if node is not None else (None, None)
    for t in readers:
        t.join(10)
    if sampler is not None:
        sampler.join(10)
    run.source_requests = int(source.stats()["requests"])
    run.records = watcher.records
    before_c, before_r = cpu_before
    after_c, after_r = cpu_after
    run.consumer_cpu = after_c - before_c if after_c is not None and before_c is not None else None
    run.refresher_cpu = after_r - before_r if after_r is not None and before_r is not None else None
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


@dataclass
class Backlog:
    """The group's backlog (pending + lag) over a run: thirds' medians, max, and whether it grew."""

    first: float
    last: float
    peak: int
    growing: bool

    def __str__(self) -> str:
        return f"{self.first:.0f}/{self.last:.0f}/{self.peak} {'GROWING' if self.growing else 'flat'}"


def backlog_of(samples: list[tuple[float, int]], rate: float) -> Backlog | None:
    """Growing: the last third's median above the first third's by more than 100 ms of events (and 50)."""
    values = [v for _, v in samples]
    if len(values) < 3:
        return None
    third = len(values) // 3
    first, last = statistics.median(values[:third]), statistics.median(values[-third:])
    return Backlog(first, last, max(values), last > first + max(50.0, rate * 0.1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=None, help="run this long (events = rate x seconds)")
    parser.add_argument("--rate", type=float, default=500.0, help="events per second")
    parser.add_argument("--keys", type=int, default=200, help="hot keys the events go round")
    parser.add_argument("--readers", type=int, default=2, help="reader threads")
    parser.add_argument("--quick", action="store_true", help="1,000 events")
    parser.add_argument("--systems", default="cachewarm,naive",
                        help="comma-separated: cachewarm, cachewarm-per-key (a script call per key on a cluster: "
                             "before issue 29), naive")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--layout", choices=["process", "shared"], default="process",
                        help="the consumer in its own process beside the sidecar's refresh engine (default), or a "
                             "thread sharing one process with it (before issue 12)")
    parser.add_argument("--refresher", choices=["engine", "cache", "none"], default="engine",
                        help="how hot keys are refreshed: the sidecar's refresh engine (default), reads through a "
                             "Cache in a thread pool of the consumer's process, or not at all (deletion alone)")
    parser.add_argument("--switch-interval", type=float, default=0.0005,
                        help="sys.setswitchinterval of the bench and of the --layout shared consumer process")
    parser.add_argument("--batch-max", type=int, default=200, help="most events the driver commits at once")
    parser.add_argument("--find-max", action="store_true",
                        help="cachewarm at each of --rates until one fails (del p99, backlog, rate reached)")
    parser.add_argument("--rates", default=FIND_MAX_RATES)
    add_topology_arg(parser)
    args = parser.parse_args(argv)
    sys.setswitchinterval(args.switch_interval)
    if args.quick:
        args.events = min(args.events, 1000)
    print(f"before the runs: {load_average()}")
    if args.find_max:
        find_max(args)
        return
    if args.seconds is not None:
        args.events = int(args.rate * args.seconds)
    figures: dict[str, dict[str, float]] = {}
    for topology in topologies_of(args):
        figures[topology] = run_topology(topology, args)
    if len(figures) > 1:
        names = [name for name in figures["standalone"] if name.endswith("ms")]
        side_by_side("Invalidation latency: standalone and cluster",
                     [Figure(name, 1.2 if "p99" in name and "cachewarm" in name else None) for name in names],
                     figures, notes=["goal: the cluster's cachewarm p99s within 1.2x of standalone's",
                                     f"after the runs: {load_average()}"])


COLUMNS = ["system", "events", "del p50", "del p99", "del max", "new p50", "new p99", "new max", "no new", "reads",
           "stale after del", "stale before del", "src req", "src/ev", "cons ms/ev", "refr ms/ev", "pending"]


def _row(system: str, run: Run, rate: float, label: str | None = None) -> tuple[list[Any], dict[str, float]]:
    deleted = latency_stats([r.t_del - r.t_pub for r in run.records if r.t_del is not None])
    new = latency_stats([r.t_new - r.t_pub for r in run.records if r.t_new is not None])
    missing = sum(1 for r in run.records if r.t_new is None)
    after, before = _stale_reads(run)
    events = max(len(run.records), 1)
    backlog = backlog_of(run.pending, rate)

    def per_event(cpu: float | None) -> str:
        return f"{cpu * 1000 / events:.3f}" if cpu is not None else "-"

    row = [label or system, f"{len(run.records)} ({len(run.records) / run.seconds:.0f}/s)",
           format_ms(deleted.p50, 1), format_ms(deleted.p99, 1), format_ms(deleted.max, 1),
           format_ms(new.p50, 1), format_ms(new.p99, 1), format_ms(new.max, 1), missing,
           len(run.reads), after, before, run.source_requests, f"{run.source_requests / events:.2f}",
           per_event(run.consumer_cpu), per_event(run.refresher_cpu), str(backlog) if backlog else "-"]
    figures = {f"{system} del p50 ms": deleted.p50 * 1000, f"{system} del p99 ms": deleted.p99 * 1000,
               f"{system} new p50 ms": new.p50 * 1000, f"{system} new p99 ms": new.p99 * 1000,
               f"{system} stale after del": after, f"{system} no new value": missing,
               f"{system} rate": len(run.records) / run.seconds,
               f"{system} growing": float(backlog.growing) if backlog else 0.0}
    return row, figures


def _notes() -> list[str]:
    return ["times in ms from publish (the naive writer's DEL) to deleted / to new value readable",
            f"goals: del p99 <= {DEL_GOAL_MS:g} ms (10 ms at 500/s); new p99 <= 80 ms at 500/s; stale after del = 0; "
            "pending flat",
            "pending: the group's pending + lag sampled every second (first third's median / last third's median / "
            "max); cons/refr ms/ev: CPU of the consumer's / refresher's process per event",
            load_average()]


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
            run = (run_cachewarm(servers, source, config, args, VARIANTS[system]) if system in VARIANTS
                   else run_naive(servers, source, args))
            row, found = _row(system, run, args.rate)
            rows.append(row)
            figures.update(found)
    md = print_table(
        f"Invalidation latency ({topology}, --layout {args.layout}, --refresher {args.refresher}): {args.events} "
        f"events at {args.rate:g}/s over {args.keys} hot keys, source {SOURCE_LATENCY * 1000:g} ms",
        COLUMNS, rows, notes=_notes())
    if args.markdown:
        print()
        print(md)
    return figures


def find_max(args: argparse.Namespace) -> None:
    """cachewarm alone at each rate of --rates for --seconds (default 20) until one fails; prints each row and the
    highest rate held."""
    seconds = args.seconds or 20.0
    rows = []
    held = 0.0
    with cache_servers(args.topology if args.topology != "both" else "standalone") as servers, \
            SourceProcess(latency=SOURCE_LATENCY, items=max(args.keys, 1000)) as source, \
            tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "cachewarm.toml"
        config.write_text(CONFIG.format(url=source.url))
        for rate in [float(r) for r in args.rates.split(",")]:
            args.rate, args.events = rate, int(rate * seconds)
            run = run_cachewarm(servers, source, config, args)
            row, found = _row("cachewarm", run, rate, label=f"cachewarm {rate:g}/s")
            rows.append(row)
            failed = [why for why, bad in [
                ("del p99", found["cachewarm del p99 ms"] > DEL_GOAL_MS),
                ("backlog growing", bool(found["cachewarm growing"])),
                ("driver behind", found["cachewarm rate"] < 0.97 * rate)] if bad]
            print(f"{rate:g}/s: del p99 {found['cachewarm del p99 ms']:.1f} ms, backlog {row[-1]}, "
                  f"published {found['cachewarm rate']:.0f}/s: {'FAILED ' + ', '.join(failed) if failed else 'held'}"
                  f" ({load_average()})", flush=True)
            if failed:
                break
            held = rate
    md = print_table(
        f"Highest sustained invalidation rate (--layout {args.layout}, --refresher {args.refresher}): {seconds:g} s "
        f"per rate over {args.keys} hot keys, source {SOURCE_LATENCY * 1000:g} ms; held: {held:g}/s",
        COLUMNS, rows, notes=_notes())
    if args.markdown:
        print()
        print(md)


if __name__ == "__main__":
    main()
