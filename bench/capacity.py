"""Capacity figures for docs/SCALING.md: what one read, one refresh and one invalidation event cost Redis and the
client, and what one client core, one worker core and one consumer can do.

On a private cache (a redis-server, or a 3-master Redis Cluster with `--topology cluster`; the source a local
HTTP process answering at once), in one process, phase after phase:
  miss          Cache.get of N distinct keys, each a miss: lease, source GET over HTTP, fenced store
  hit           N x R Cache.get of those keys drawn Zipf (s = 1.1), as the benches read (hit counting and
                hot-key tracking on, their buffered flushes included: Cache.flush_stats() closes the phase); the
                ZINCRBYs of the tracking are one per distinct key per flush (0.25 s), so a skewed load pays fewer
  raw GET       the same reads as plain redis-py GETs of the value keys: the reference a hit is compared with
  refresh       refresh_batch(force=True) of the N keys (the worker's path: claim, HTTP GET, fenced store), 100
                concurrent fetches over the workers' aiohttp transport
  publish       publish_invalidation(key, version=v) of N events (the writer's side)
  consume       one InvalidationConsumer applying the N events (poll() in a loop, no hot refresh: that cost is
                the refresh row's), measured until every event is applied: its rate is one consumer's ceiling
  consume+WAIT  the same with the keyspace's `fence_replica_wait` (--fence-wait, default 0.1 s): N more events
                published, then applied with a `WAIT 1` per master per batch (standalone: a replica is started
                for it, `--replicaof` the cache's server)
`--events-only` skips the read and refresh phases.
Per phase, deltas summed over every master: INFO commandstats (calls; commands that scripts run count too, so
`cmds/op` is Redis's work, and `EVAL*` is the number of script calls), total_net_input/output_bytes, the
server's CPU (used_cpu_user + used_cpu_sys), used_memory; the client's CPU is this process's (time.process_time,
every thread: the flush thread too). A calibration of an empty phase (the INFO calls themselves) is subtracted.

    .venv/bin/python -m bench.capacity [--keys 5000] [--repeat 4] [--topology standalone|cluster|both]
        [--fence-wait 0.1] [--events-only]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.common import ZipfSampler, percentile, print_table
from bench.topology import CacheServers, add_topology_arg, cache_servers, load_average, topologies_of
from cachewarm import Cache, publish_invalidation
from cachewarm.demo.redis_server import RedisServer
from cachewarm.demo.source_process import SourceProcess
from cachewarm.invalidation.apply import apply_events
from cachewarm.invalidation.consumer import InvalidationConsumer
from cachewarm.invalidation.events import Event
from cachewarm.redis_layer.connections import async_client
from cachewarm.redis_layer.keys import CONSUMER_GROUP, INVALIDATION_STREAM, KeyLayout
from cachewarm.settings import Settings
from cachewarm.warming.context import RefreshContext, make_http_client
from cachewarm.warming.refresh import refresh_batch

CONFIG = """
[keyspaces.product]
pattern = "product:{{id}}"
source = "{url}/products/{{id}}"
ttl = 3600
version_field = "version"
fence_replica_wait = {wait}
"""
IGNORED = {"info", "config|resetstat", "config", "cluster|info", "cluster|slots", "cluster|shards", "ping",
           "client|setinfo", "hello", "cluster|nodes", "command", "command|docs", "select"}
STREAM_COMMANDS = ("xadd", "xreadgroup", "xack", "xautoclaim", "xinfo|stream", "xgroup|create", "xtrim")


@dataclass
class Snapshot:
    calls: dict[str, int] = field(default_factory=dict)
    usec: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)  # error replies (a NOSCRIPT, a MOVED...)
    net_in: int = 0
    net_out: int = 0
    server_cpu: float = 0.0
    memory: int = 0
    client_cpu: float = 0.0
    wall: float = 0.0

    def minus(self, other: Snapshot) -> Snapshot:
        names = set(self.calls) | set(other.calls)
        return Snapshot({n: self.calls.get(n, 0) - other.calls.get(n, 0) for n in names},
                        {n: self.usec.get(n, 0) - other.usec.get(n, 0) for n in names},
                        {n: self.failed.get(n, 0) - other.failed.get(n, 0) for n in names},
                        self.net_in - other.net_in, self.net_out - other.net_out, self.server_cpu - other.server_cpu,
                        self.memory - other.memory, self.client_cpu - other.client_cpu, self.wall - other.wall)


class Meter:
    """Snapshots of the cache's masters (INFO, summed) and of this process's CPU."""

    def __init__(self, servers: CacheServers) -> None:
        self.clients = [redis.Redis.from_url(url) for url in servers.master_urls()]
        self.overhead = Snapshot()
        first = self.snapshot()
        self.overhead = self.snapshot().minus(first)  # what two snapshots cost, subtracted from every phase

    def snapshot(self) -> Snapshot:
        snap = Snapshot(client_cpu=time.process_time(), wall=time.perf_counter())
        for client in self.clients:
            info = client.info("all")
            snap.net_in += int(info["total_net_input_bytes"])
            snap.net_out += int(info["total_net_output_bytes"])
            snap.server_cpu += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
            snap.memory += int(info["used_memory_dataset"])  # without the replication backlog, buffers
            for name, value in info.items():
                if name.startswith("cmdstat_") and isinstance(value, dict):
                    command = name.removeprefix("cmdstat_")
                    snap.calls[command] = snap.calls.get(command, 0) + int(value["calls"])
                    snap.usec[command] = snap.usec.get(command, 0) + int(value["usec"])
                    errors = int(value.get("failed_calls", 0)) + int(value.get("rejected_calls", 0))
                    snap.failed[command] = snap.failed.get(command, 0) + errors
        return snap

    def measure(self, work: Callable[[], None]) -> Snapshot:
        before = self.snapshot()
        work()
        delta = self.snapshot().minus(before)
        delta.net_in -= self.overhead.net_in
        delta.net_out -= self.overhead.net_out
        for name in list(delta.calls):
            if name in IGNORED or delta.calls[name] <= 0:
                del delta.calls[name]
        return delta

    def close(self) -> None:
        for client in self.clients:
            client.close()


@dataclass
class Phase:
    name: str
    ops: int
    delta: Snapshot

    def per_op(self, value: float) -> float:
        return value / self.ops

    def commands(self) -> str:
        top = sorted(self.delta.calls.items(), key=lambda item: -item[1])
        return " ".join(f"{name.upper()} {calls / self.ops:.2f}" for name, calls in top if calls / self.ops >= 0.01)

    def failures(self) -> str:
        failed = sorted(((n, c) for n, c in self.delta.failed.items() if c > 0), key=lambda item: -item[1])
        return " ".join(f"{name.upper()} {calls / self.ops:.2f}" for name, calls in failed) or "none"

    def stream_usec(self) -> float:
        return sum(self.delta.usec.get(name, 0) for name in STREAM_COMMANDS) / self.ops


def run(servers: CacheServers, keys: int, repeat: int, *, fence_wait: float = 0.1,
        events_only: bool = False) -> list[Phase]:
    with SourceProcess(latency=0.0, items=max(keys, 1000)) as source, tempfile.TemporaryDirectory() as tmp, \
            contextlib.ExitStack() as stack:
        config = Path(tmp) / "cachewarm.toml"
        config.write_text(CONFIG.format(url=source.url, wait=0))
        waiting = Path(tmp) / "waiting.toml"
        waiting.write_text(CONFIG.format(url=source.url, wait=fence_wait))
        settings = servers.settings(config=config, refresh_concurrency=100)
        servers.flush()
        if not servers.cluster:  # a replica for the WAITs (a cluster's masters have theirs)
            master = servers.nodes[0].port
            replica = stack.enter_context(RedisServer(extra_args=["--replicaof", "127.0.0.1", str(master)]))
            wait_replica(master, replica.port)
        meter = Meter(servers)
        names = [f"product:{i}" for i in range(keys)]
        phases: list[Phase] = []
        try:
            if not events_only:
                phases += reads_and_refresh(servers, settings, meter, names, repeat)
            client = servers.client()
            client.xgroup_create(INVALIDATION_STREAM, CONSUMER_GROUP, id="$", mkstream=True)
            for label, conf, first in (("", config, 10), (f"+WAIT {fence_wait:g} s", waiting, 10 + keys)):
                consumer = InvalidationConsumer(servers.settings(config=conf), block_ms=50)
                try:
                    consumer.poll(block_ms=1)  # the group found, connections made, before anything is published

                    def publish(first: int = first) -> None:
                        for version, name in enumerate(names, start=first):
                            publish_invalidation(name, version=version, redis=client, settings=settings)

                    phases.append(Phase("publish (publish_invalidation)", keys, meter.measure(publish)))
                    phases.append(Phase(f"consume{label} (1 consumer applies)", keys,
                                        meter.measure(functools.partial(consume, consumer, keys))))
                    if label:
                        print(f"consume{label}: WAITs that ran out: {consumer.stats['unreplicated']}",
                              file=sys.stderr)
                finally:
                    consumer.close()
            apply_latency(servers, settings, (config, waiting), names[:200])
            client.close()
        finally:
            meter.close()
    return phases


def apply_latency(servers: CacheServers, settings: Settings, configs: Sequence[Path], names: Sequence[str]) -> None:
    """Prints the time of one apply_events of one key event (the consumer's apply round trip at a low event rate),
    without and with the keyspace's fence_replica_wait, interleaved, median and p99."""
    client = servers.client()
    layout = KeyLayout(settings.key_prefix)
    registries = [servers.settings(config=c).load_keyspaces() for c in configs]
    times: list[list[float]] = [[], []]
    try:
        for n in range(len(names) * 3):
            for i, registry in enumerate(registries):
                event = Event(f"{n}-{i}", "key", names[n % len(names)], version=1_000_000 + n)
                started = time.perf_counter()
                apply_events(client, [event], layout=layout, fence_ttl=settings.fence_ttl, keyspaces=registry)
                times[i].append((time.perf_counter() - started) * 1e6)
    finally:
        client.close()
    for label, samples in zip(("without WAIT", "with WAIT (fence_replica_wait)"), times, strict=True):
        samples.sort()
        print(f"apply_events of 1 key event, {label}: median {samples[len(samples) // 2]:,.0f} µs, "
              f"p99 {percentile(samples, 99, ordered=True):,.0f} µs ({len(samples)} calls, {servers.topology})",
              file=sys.stderr)


def wait_replica(master: int, replica: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.closing(redis.Redis(port=replica)) as client:
            if client.info("replication").get("master_link_status") == "up":
                return
        time.sleep(0.1)
    raise RuntimeError(f"the replica :{replica} of :{master} did not sync")


def reads_and_refresh(servers: CacheServers, settings: Settings, meter: Meter, names: list[str],
                      repeat: int) -> list[Phase]:
    keys = len(names)
    phases: list[Phase] = []
    with Cache(settings=settings) as cache:
        cache.get("product:warm")  # connections, scripts and plans ready
        cache.flush_stats()

        def misses() -> None:
            for name in names:
                cache.get(name)
            cache.flush_stats()

        sampler = ZipfSampler(keys, 1.1, seed=1)
        reads = [names[sampler.sample()] for _ in range(keys * repeat)]  # drawn before the clock starts

        def hits() -> None:
            for name in reads:
                cache.get(name)
            cache.flush_stats()

        phases.append(Phase("miss (Cache.get, loads)", keys, meter.measure(misses)))
        phases.append(Phase("hit (Cache.get)", keys * repeat, meter.measure(hits)))
        raw = servers.client()
        values = [KeyLayout(settings.key_prefix).value(name) for name in reads]

        def raw_gets() -> None:
            for value in values:
                raw.get(value)

        phases.append(Phase("raw GET of the same values (reference)", len(values), meter.measure(raw_gets)))
        raw.close()
    phases.append(Phase("refresh (refresh_batch)", keys, meter.measure(lambda: refresh(settings, names))))
    return phases


def refresh(settings: Settings, names: Sequence[str]) -> None:
    async def go() -> None:
        http = make_http_client(settings, concurrency=100)
        ctx = RefreshContext(settings, async_client(settings.redis_url, timeout=10, cluster=settings.redis_cluster),
                             http, "capacity")
        try:
            for i in range(0, len(names), 1000):
                await refresh_batch(ctx, names[i:i + 1000], force=True)
        finally:
            await http.aclose()
            await ctx.redis.aclose()

    asyncio.run(go())


def consume(consumer: InvalidationConsumer, events: int) -> None:
    done, deadline = 0, time.monotonic() + 120
    while done < events and time.monotonic() < deadline:
        done += consumer.poll(block_ms=50)
    if done < events:
        raise RuntimeError(f"the consumer applied {done} of {events} events")


def report(topology: str, phases: Sequence[Phase], keys: int) -> str:
    rows = []
    for phase in phases:
        d = phase.delta
        client_us = phase.per_op(d.client_cpu) * 1e6
        rows.append([phase.name, f"{phase.ops:,}", phase.commands(), f"{phase.per_op(d.net_in):,.0f}",
                     f"{phase.per_op(d.net_out):,.0f}", f"{client_us:,.0f}", f"{1e6 / client_us:,.0f}",
                     f"{phase.per_op(d.server_cpu) * 1e6:,.1f}", f"{phase.ops / d.wall:,.0f}"])
    miss = phases[0].delta
    consume_phase = next(p for p in phases if p.name.startswith("consume ("))
    publish_phase = next(p for p in phases if p.name.startswith("publish"))
    return print_table(
        f"capacity ({topology}): per operation, {keys:,} keys", ["operation", "ops", "Redis commands per op",
                                                                 "bytes in/op", "bytes out/op", "client CPU µs/op",
                                                                 "ops/s per client core", "Redis CPU µs/op",
                                                                 "ops/s (wall)"], rows,
        notes=[f"memory: {miss.memory / keys:,.0f} bytes of used_memory_dataset per cached key after the misses (value "
               "envelope of a ~200-byte JSON product, fence, TTLs)",
               f"stream commands (XADD, XREADGROUP, XACK, ...) per event: "
               f"{(publish_phase.stream_usec() + consume_phase.stream_usec()):.1f} µs of Redis time (commandstats "
               "usec): the ceiling of the one slot holding the stream, on one core, ignoring the rest",
               "Redis commands counted by the server: the commands scripts run are counted too (EVALSHA = script "
               "calls); bytes: total_net_input/output_bytes (RESP, including replies)",
               "ops/s per client core = 1e6 / client CPU µs/op; ops/s (wall) = what this one process did "
               "(the machine is shared: see the load average)",
               load_average()])


def _interrupted(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--keys", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=4, help="hits per key (on average; Zipf-drawn)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--fence-wait", type=float, default=0.1, help="fence_replica_wait of the consume+WAIT phase")
    parser.add_argument("--events-only", action="store_true", help="only the publish and consume phases")
    add_topology_arg(parser)
    args = parser.parse_args(argv)
    if args.keys <= 0 or args.repeat <= 0:
        parser.error("--keys and --repeat must be > 0")
    signal.signal(signal.SIGTERM, _interrupted)  # a killed bench still stops its servers (the `with` blocks)
    print(f"before the runs: {load_average()}", file=sys.stderr)
    for topology in topologies_of(args):
        with cache_servers(topology) as servers:
            phases = run(servers, args.keys, args.repeat, fence_wait=args.fence_wait, events_only=args.events_only)
        markdown = report(topology, phases, args.keys)
        if args.markdown:
            print()
            print(markdown)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
