"""The near cache's correctness load: a writer process changes keys, reader processes read them through local
copies, and every read is checked against what Redis held before it began.

    python -m tests.support.near_load writer --redis URL --config F --keys N --rate R --seconds S --out F
    python -m tests.support.near_load reader --redis URL --config F --keys N --seconds S --out F [--async] [--no-push]

The writer sets `near:<i>` to {"version": n} (n grows per key) through `Cache.set`, and logs each write's version
and the monotonic time its acknowledgement arrived (from then on Redis held it). A reader logs, for every read, the
key, the version it got (-1: none) and the monotonic time the read began. `stale_reads` counts the reads that got a
version older than one Redis had acknowledged `slack` seconds or more before the read began (CLOCK_MONOTONIC is one
clock for every process of the machine). `--no-push` makes the reader ignore Redis's invalidation pushes: the
check must then find stale reads (it proves the check bites).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import random
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tests.support.waiting import wait_until

KEYSPACE_TOML = """
[keyspaces.near]
pattern = "near:{id}"
source = "python:tests.support.near_load:load"
ttl = 600
local = true
local_max_entries = 100000
"""


def _wait_for_go(args: argparse.Namespace) -> None:
    """Waits until run_load creates the go file (every reader has started), for at most 300 s."""
    go = Path(args.go)
    deadline = time.monotonic() + 300
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def load(id: str) -> None:
    """The keyspace's source: the writer puts every value; a key Redis lost reads as "no such item"."""
    return None


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from cachewarm import Settings

    return Settings.load(redis_url=args.redis, config=Path(args.config), redis_timeout=0.5, redis_backoff=0.2,
                         redis_cluster=args.cluster)


def writer(args: argparse.Namespace) -> None:
    from cachewarm import Cache
    from cachewarm.errors import CacheUnavailable

    cache = Cache(settings=_settings(args))
    versions = [0] * args.keys
    log: list[tuple[int, int, float]] = []
    for i in range(args.keys):  # every key exists before the readers start
        cache.set(f"near:{i}", {"version": 0})
        log.append((i, 0, time.monotonic()))
    Path(args.out + ".ready").write_text("ready")
    # The writes start once every reader reads (run_load says so): readers that take long to start on a busy host
    # would otherwise find the writes over and judge nothing (seen: 0 stale reads without pushes).
    _wait_for_go(args)
    interval = 1.0 / args.rate
    started = time.monotonic()
    n = 0
    while (now := time.monotonic()) - started < args.seconds:
        due = started + n * interval
        if due > now:
            time.sleep(due - now)
        i = random.randrange(args.keys)
        versions[i] += 1
        try:
            cache.set(f"near:{i}", {"version": versions[i]})
        except CacheUnavailable:
            versions[i] -= 1
        else:
            log.append((i, versions[i], time.monotonic()))
        n += 1
    cache.close()
    Path(args.out).write_text(json.dumps(log))


def _read_key(rng: random.Random, keys: int) -> int:
    # Skewed: a tenth of the keys take half the reads, so local copies get hits between changes.
    return rng.randrange(max(1, keys // 10)) if rng.random() < 0.5 else rng.randrange(keys)


def _pace_delay(started: float, done: int, rate: float) -> float:
    return max(0.0, started + done / rate - time.monotonic()) if rate > 0 else 0.0


def _pace(started: float, done: int, rate: float) -> None:
    # Readers keep a steady rate rather than spin: four spinning readers would starve the writer on a small host.
    delay = _pace_delay(started, done, rate)
    if delay > 0:
        time.sleep(delay)


def local_hits(cache: Any) -> int:
    """The near cache's local hits so far in this reader (a read that raised it was answered locally)."""
    return sum(cache._near.hits.values()) if cache._near is not None else 0


def _version(value: object) -> int:
    return int(value["version"]) if isinstance(value, dict) else -1


def reader(args: argparse.Namespace) -> None:
    if args.no_push:
        from cachewarm.near.cache import NearCache

        NearCache._changed_keys = lambda self, keys: None  # type: ignore[method-assign]
    rng = random.Random()
    log: list[tuple[int, int, float, int]] = []
    if args.use_async:
        asyncio.run(_read_async(args, rng, log))
    else:
        from cachewarm import Cache

        with Cache(settings=_settings(args)) as cache:
            cache.get("near:0")
            Path(args.out + ".reading").write_text("reading")
            _wait_for_go(args)
            started = time.monotonic()
            while time.monotonic() - started < args.seconds:
                _pace(started, len(log), args.read_rate)
                i = _read_key(rng, args.keys)
                t0 = time.monotonic()
                served = local_hits(cache)
                value = cache.get(f"near:{i}")
                log.append((i, _version(value), t0, local_hits(cache) - served))
            figures = cache.near_figures()
    Path(args.out).write_text(json.dumps({"reads": log, "figures": figures if not args.use_async else None}))


async def _read_async(args: argparse.Namespace, rng: random.Random,
                      log: list[tuple[int, int, float, int]]) -> None:
    from cachewarm import AsyncCache

    async with AsyncCache(settings=_settings(args)) as cache:
        await cache.get("near:0")
        Path(args.out + ".reading").write_text("reading")
        _wait_for_go(args)
        started = time.monotonic()
        while time.monotonic() - started < args.seconds:
            await asyncio.sleep(_pace_delay(started, len(log), args.read_rate))
            i = _read_key(rng, args.keys)
            t0 = time.monotonic()
            served = local_hits(cache)
            value = await cache.get(f"near:{i}")
            log.append((i, _version(value), t0, local_hits(cache) - served))


def stale_reads(writes: Iterable[tuple[int, int, float]], reads: Iterable[Sequence[Any]], *,
                slack: float = 0.005, losses: Iterable[float] = (),
                lost_keys: Callable[[int], bool] = lambda key: True,
                ignore_missing: bool = False) -> list[tuple[int, int, int, float]]:
    """The reads that got a version older than one acknowledged `slack` s before they began: (key, got, expected,
    read start). `losses`: times Redis lost data (a restart; a failover, whose replica may lack the last writes
    its master acknowledged) for the keys `lost_keys` accepts: a write acknowledged before a loss may no longer
    be held after it. `ignore_missing`: reads that got nothing (-1) from Redis or the source are not judged (Redis
    unreachable for that reader: the test source answers "no such item"); a -1 served by the near cache is."""
    acked: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for key, version, at in writes:
        acked[key].append((at, version))
    for entries in acked.values():
        entries.sort()  # one writer: versions grow with acknowledgement time
    loss_times = sorted(losses)
    bad = []
    for key, got, began, *local in reads:
        if ignore_missing and got < 0 and not (local and local[0]):
            continue
        entries = acked.get(key, [])
        index = bisect.bisect_right(entries, (began - slack, float("inf")))
        if index == 0:
            continue
        at, expected = entries[index - 1]
        loss = bisect.bisect_right(loss_times, began)
        if loss and loss_times[loss - 1] >= at and lost_keys(key):
            continue  # Redis lost it (a restart) before this read began
        if got < expected:
            bad.append((key, got, expected, began))
    return bad


def kill_tracking_links(url: str, seconds: float, interval: float = 0.7) -> int:
    """For `seconds`, every `interval` s, CLIENT KILL every near cache's tracking connection; returns how many."""
    import redis

    from cachewarm.near.link import LINK_NAME

    killer = redis.Redis.from_url(url)
    killed = 0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(interval)
            for client in killer.client_list():
                if client["name"] == LINK_NAME:
                    killer.client_kill_filter(_id=client["id"])
                    killed += 1
    finally:
        killer.close()
    return killed


def restart_redis(server: Any, after: float, losses: list[float]) -> None:
    """After `after` s, stops the RedisServer (its data is lost), notes when it is gone, and starts it again."""
    time.sleep(after)
    server.stop()  # a write acknowledged while it shuts down is lost too: the loss is when it is gone
    losses.append(time.monotonic())
    time.sleep(0.5)
    server.start()


def run_load(url: str, tmp_path: Path, *, seconds: float, keys: int = 200, read_rate: float = 1000,
             no_push: bool = False, cluster: bool = False,
             during: Callable[[], None] | None = None) -> tuple[list, list, list[dict]]:
    """Runs the writer and four readers (two async); `during()` runs in this process meanwhile. Returns the writes,
    the reads and the sync readers' near-cache figures."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "near.toml"
    config.write_text(KEYSPACE_TOML)
    base = [sys.executable, "-m", "tests.support.near_load"]
    common = ["--redis", url, "--config", str(config), "--keys", str(keys), "--go", str(tmp_path / "go"),
              *(["--cluster"] if cluster else [])]
    writes_path = tmp_path / "writes.json"
    writer = subprocess.Popen([*base, "writer", *common, "--rate", "1000", "--seconds", str(seconds + 2),
                               "--out", str(writes_path)])
    readers = []
    try:
        wait_until(lambda: Path(str(writes_path) + ".ready").exists(), timeout=30, what="the writer's keys")
        for n in range(4):
            extra = (["--async"] if n % 2 else []) + (["--no-push"] if no_push else [])
            readers.append(subprocess.Popen([*base, "reader", *common, "--seconds", str(seconds),
                                             "--read-rate", str(read_rate), "--out", str(tmp_path / f"reads{n}.json"),
                                             *extra]))
        wait_until(lambda: all(Path(str(tmp_path / f"reads{n}.json") + ".reading").exists() for n in range(4)),
                   timeout=60, what="the readers reading")
        (tmp_path / "go").write_text("go")  # the readers and the writer start together
        if during is not None:  # once every reader reads
            during()
        for proc in [*readers, writer]:
            assert proc.wait(timeout=seconds + 60) == 0
    finally:
        for proc in [*readers, writer]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    writes = json.loads(writes_path.read_text())
    reads, figures = [], []
    for n in range(4):
        data = json.loads((tmp_path / f"reads{n}.json").read_text())
        reads.extend(data["reads"])
        if data["figures"] is not None:
            figures.append(data["figures"])
    return writes, reads, figures


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["writer", "reader"])
    parser.add_argument("--redis", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--out", required=True)
    parser.add_argument("--read-rate", type=float, default=2000, help="reads/s per reader (0: as fast as it can)")
    parser.add_argument("--async", dest="use_async", action="store_true")
    parser.add_argument("--no-push", action="store_true")
    parser.add_argument("--go", required=True, help="a file whose creation starts the reads and writes")
    parser.add_argument("--cluster", action="store_true", help="the URL names a Redis Cluster node")
    args = parser.parse_args(argv)
    (writer if args.role == "writer" else reader)(args)


if __name__ == "__main__":
    main(sys.argv[1:])
