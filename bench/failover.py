"""Failover (issue 10 item 4): what a master's SIGKILL loses on a Redis Cluster, under reads, refreshes and an
invalidation burst.

A private 3-master cluster (1 replica each), a versioned keyspace of --keys keys on a local source. Threads: Zipf
readers (`Cache.get`), a refresher (`refresh_batch(force=True)` of random keys, in a loop), a writer bumping a
key's version at the source and publishing `publish_invalidation(key, version=v)`, and one invalidation consumer.
After --before seconds one master is SIGKILLed; its replica is promoted; the load goes on for --after seconds,
then the writer stops and the consumer drains. Counted (Redis replication is asynchronous, so what the dead master
acknowledged and had not sent on can be lost):
  events lost          publishes that returned an id but whose entry is not in the stream afterwards
  bumps/floors lost    at the promotion: keys on the killed master's slots whose fence generation (`g`, bumped by
                       every invalidation) or version floor (`v`) the promoted replica has lower than the killed
                       master had just before its SIGKILL (read from each, directly, ~1 ms before the kill and as
                       soon as the replica reports itself master): acknowledged bumps the replica never got
  floors lost (end)    keys whose fence's version field ends below the highest version published for them
  older served         reads that returned a version older than one already served for that key (a read's
                       version never goes down, unless a lost floor let an older value in), split before / after
                       the kill, with the keys they touched and how many of the newer reads were answered while
                       the key's slot had no master (readers fall back to the source)
  cache != source      keys whose cached version, after quiescence, differs from the source's
  reader errors        exceptions raised to readers (goal: none; they fall back to the source)

`--fence-wait S` sets the keyspace's `fence_replica_wait` (the consumer sends `WAIT 1 <S*1000>` after each batch's
fence bumps and floors, docs/SCALING.md); the consumer's events/s and apply time are printed either way.

    .venv/bin/python -m bench.failover [--keys 200] [--before 4] [--after 8] [--fence-wait 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import redis

from bench.common import ZipfSampler
from bench.topology import CacheServers, cache_servers, load_average
from cachewarm import Cache, publish_invalidation
from cachewarm.demo.source_process import SourceProcess
from cachewarm.invalidation.consumer import InvalidationConsumer
from cachewarm.redis_layer.connections import async_client
from cachewarm.redis_layer.keys import CONSUMER_GROUP, INVALIDATION_STREAM, KeyLayout
from cachewarm.warming.context import RefreshContext, make_http_client
from cachewarm.warming.refresh import refresh_batch

CONFIG = """
[keyspaces.product]
pattern = "product:{{id}}"
source = "{url}/products/{{id}}"
ttl = 300
version_field = "version"
fence_replica_wait = {wait}
"""


def fences(port: int, names: list[str], layout: KeyLayout) -> dict[str, tuple[int, int]]:
    """(generation, version floor) of the fence of every key this node serves (the others answer MOVED)."""
    direct = redis.Redis(port=port, socket_timeout=2)
    try:
        pipe = direct.pipeline(transaction=False)
        for name in names:
            pipe.hmget(layout.fence(name), "g", "v")
        replies = pipe.execute(raise_on_error=False)
    finally:
        direct.close()
    return {name: (int(reply[0] or -1), int(reply[1] or -1))
            for name, reply in zip(names, replies, strict=True) if not isinstance(reply, Exception)}


def replica_of(servers: CacheServers, port: int) -> int:
    for node in servers.nodes:
        info = redis.Redis(port=node.port, socket_timeout=2).info("replication")
        if info.get("role") == "slave" and int(info.get("master_port", 0)) == port:
            return node.port
    raise RuntimeError(f"no replica of :{port}")


def promoted(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=port, socket_timeout=1).info("replication").get("role") == "master":
                return True
        except redis.RedisError:
            pass
        time.sleep(0.005)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--before", type=float, default=4.0, help="seconds of load before the kill")
    parser.add_argument("--after", type=float, default=8.0, help="seconds of load after the kill")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fence-wait", type=float, default=0.0,
                        help="the keyspace's fence_replica_wait in seconds (0: no WAIT)")
    args = parser.parse_args(argv)
    print(f"before the run: {load_average()}")
    with cache_servers("cluster") as servers, SourceProcess(latency=0.002, items=max(args.keys, 1000)) as source, \
            tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "cachewarm.toml"
        config.write_text(CONFIG.format(url=source.url, wait=args.fence_wait))
        settings = servers.settings(config=config, redis_timeout=1.0)
        layout = KeyLayout(settings.key_prefix)
        names = [f"product:{i}" for i in range(args.keys)]
        client = servers.client()
        client.xgroup_create(INVALIDATION_STREAM, CONSUMER_GROUP, id="$", mkstream=True)
        stop, writing = threading.Event(), threading.Event()
        writing.set()
        served: dict[str, tuple[int, float]] = {}  # key -> (highest version read, when a read of it ended)
        # (key, version, newer version served before, s after kill, when that newer read ended, s after kill)
        older: list[tuple[str, int, int, float, float]] = []
        killed_at = promoted_at = float("inf")
        errors: list[str] = []
        published: dict[str, tuple[str, int]] = {}  # stream id -> (key, version)
        highest: dict[str, int] = {}
        lock = threading.Lock()
        with Cache(settings=settings) as cache:
            for name in names:
                cache.get(name)

            def reader(seed: int) -> None:
                sampler = ZipfSampler(args.keys, 1.1, seed)
                while not stop.is_set():
                    name = names[sampler.sample()]
                    started = time.monotonic()
                    try:
                        version = int(cache.get(name)["version"])
                    except Exception as exc:  # what the goal says must not happen
                        errors.append(f"{type(exc).__name__}: {exc}")
                        time.sleep(0.01)
                        continue
                    with lock:  # older only against a read that had ended before this one started
                        best, ended = served.get(name, (0, 0.0))
                        if version < best and ended < started:
                            older.append((name, version, best, started - killed_at, ended - killed_at))
                        if version > best:
                            served[name] = (version, time.monotonic())

            def refresher() -> None:
                async def go() -> None:
                    http = make_http_client(settings, concurrency=20)
                    ctx = RefreshContext(settings, async_client(settings.redis_url, timeout=1.0, cluster=True), http,
                                         "failover")
                    rng = random.Random(args.seed)
                    while not stop.is_set():
                        try:
                            await refresh_batch(ctx, rng.sample(names, 20), force=True)
                        except Exception:
                            await asyncio.sleep(0.05)
                    await http.aclose()
                    await ctx.redis.aclose()

                asyncio.run(go())

            def writer() -> None:
                http = httpx.Client(base_url=source.url, timeout=5)
                rng = random.Random(args.seed + 1)
                while writing.is_set():
                    name = names[rng.randrange(len(names))]
                    version = int(http.post(f"/_control/bump/{name.split(':', 1)[1]}").json()["version"])
                    try:
                        eid = publish_invalidation(name, version=version, redis=client, settings=settings)
                    except Exception:
                        # not acknowledged: the writer would retry (the outbox does); here the next bump covers it
                        time.sleep(0.01)
                        continue
                    published[eid] = (name, version)
                    highest[name] = max(version, highest.get(name, 0))
                    time.sleep(0.002)
                http.close()

            consumer = InvalidationConsumer(settings, block_ms=100).start()
            threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(2)]
            threads += [threading.Thread(target=refresher, daemon=True), threading.Thread(target=writer, daemon=True)]
            for thread in threads:
                thread.start()
            time.sleep(args.before)
            victim = next(node for node in servers.nodes
                          if redis.Redis(port=node.port).info("replication").get("role") == "master")
            assert victim.process is not None
            heir = replica_of(servers, victim.port)
            stream_here = client.keyslot(INVALIDATION_STREAM) in [  # type: ignore[attr-defined]
                slot for slot, nodes in client.nodes_manager.slots_cache.items()  # type: ignore[attr-defined]
                if nodes[0].port == victim.port]
            applied_before = dict(consumer.stats)
            acknowledged = fences(victim.port, names, layout)
            os.kill(victim.process.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            print(f"SIGKILL master :{victim.port} after {len(published)} events ({len(acknowledged)} keys there; "
                  f"the stream's slot {'is' if stream_here else 'is not'} on it)")
            if promoted(heir, killed_at + 30):
                promoted_at = time.monotonic()
                kept = fences(heir, list(acknowledged), layout)
                print(f"replica :{heir} promoted {promoted_at - killed_at:.2f} s after the kill")
            else:
                kept = {}
                print(f"replica :{heir} not promoted within 30 s")
            bumps_lost = [n for n, (g, _) in acknowledged.items() if g >= 0 and kept.get(n, (-1, -1))[0] < g]
            floors_cut = [n for n, (_, v) in acknowledged.items() if v >= 0 and kept.get(n, (-1, -1))[1] < v]
            time.sleep(max(0.0, args.after - (time.monotonic() - killed_at)))
            writing.clear()
            threads[-1].join(30)
            drained_at = time.monotonic() + 60
            drained = False
            while not drained and time.monotonic() < drained_at:
                try:
                    groups = client.xinfo_groups(INVALIDATION_STREAM)
                    drained = all(int(g.get("lag") or 0) == 0 and int(g.get("pending") or 0) == 0 for g in groups)
                except redis.RedisError:
                    pass
                time.sleep(0.5)
            print(f"stream drained: {drained}, {time.monotonic() - killed_at:.1f} s after the kill")
            if not drained:
                print(f"  groups: {client.xinfo_groups(INVALIDATION_STREAM)}")
                print(f"  pending: {client.xpending(INVALIDATION_STREAM, CONSUMER_GROUP)}")
                print(f"  consumer stats: {dict(consumer.stats)}")
            time.sleep(2)  # the last hot refreshes
            stop.set()
            for thread in threads[:-1]:
                thread.join(30)
            consumer.close()
            entries = client.xrange(INVALIDATION_STREAM) or []
            in_stream = {(e.decode() if isinstance(e, bytes) else e) for e, _ in entries}
            lost_events = [eid for eid in published if eid not in in_stream]
            floors_lost = 0
            for name, version in highest.items():
                floor = client.hget(layout.fence(name), "v")
                if floor is None or int(floor) < version:
                    floors_lost += 1
            http = httpx.Client(base_url=source.url, timeout=5)
            differ = 0
            for name in names:
                want = int(http.get(f"/products/{name.split(':', 1)[1]}").json()["version"])
                got = cache.lookup(name).value
                if got is None or int(got["version"]) != want:
                    differ += 1
            http.close()
        client.close()
    print(f"recovered and drained {time.monotonic() - killed_at:.1f} s after the kill")
    print(f"events published {len(published)}, lost {len(lost_events)}")
    print(f"keys with a published version: {len(highest)}, floors lost: {floors_lost}")
    print(f"fence bumps lost at the promotion: {len(bumps_lost)} keys of {len(acknowledged)} on the killed master; "
          f"version floors lost: {len(floors_cut)}")
    after = [o for o in older if o[3] >= 0]
    outage = [o for o in after if 0 <= o[4] < promoted_at - killed_at]
    print(f"reads older than one already served (to a read that had ended): {len(older)}; before the kill "
          f"{len(older) - len(after)}, after {len(after)} ({len({o[0] for o in after})} keys), of which "
          f"{len(outage)} against a newer read served while the slot had no master (from the source)")
    print(f"  first after the kill (key, version, newer, s after kill, newer's end): "
          f"{[(k, v, b, round(t, 2), round(e, 2)) for k, v, b, t, e in after[:5]]}")
    events = sum(consumer.stats[o] for o in ("applied", "stale")) - sum(
        applied_before.get(o, 0) for o in ("applied", "stale"))
    print(f"consumer: {dict(consumer.stats)}; {events} events applied after the kill")
    print(f"keys where cache != source after quiescence: {differ} of {len(names)}")
    print(f"reader errors: {len(errors)} {errors[:3]}")
    print(f"after the run: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
