"""The consistency auditor (issue 28): does it find what nobody invalidated, stay quiet when writers are correct,
keep to its budget, and leave the read path alone?

Every scenario runs a private redis-server, the demo product API in a child process (`cachewarm.demo.source`,
latency --latency, its `/_stats` counting requests by User-Agent: the auditor's say `cachewarm-audit`) and a worker
node's sidecar (`python -m cachewarm.worker.sidecar`: the invalidation consumer, the hot-key refresher and the
auditor, as in every worker node). The keyspace is versioned (`version_field = "version"`); hot keys are read
three times at the start (half-life 3,600 s: they stay hot). The baseline is the same node with `audit_budget = 0`.

  detect  --keys 200 hot keys, --changed 20 of them changed at the source without an event; the auditor at
          --budget requests/s. Per key: when its stale value was gone (repaired). Goal: 100 % detected and
          repaired within 60 s at 5 requests/s, each labelled "missed".
  read    with the auditor running (budget --budget over the hot keys): `Cache.get` of a hit against a raw GET +
          json.loads, interleaved rounds (bench/read_path.py's method). Goal: within 1.10x (median).
  steady  --rate correct invalidations/s (each a commit at the source, then its event with the version) over
          --steady-keys keys for --seconds, readers reading all along; the auditor at --budget. Goals: 0
          inconsistencies, audit requests at the source within budget + 5 %.

    python -m bench.audit                          # detect + read (about 2.5 minutes)
    python -m bench.audit --scenario steady --seconds 120
    python -m bench.audit --quick                  # a smoke run of all three
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from bench.common import percentile, print_table
from bench.read_path import interleave_sync
from cachewarm import Cache, Settings
from cachewarm.audit.checking import USER_AGENT
from cachewarm.demo.redis_server import RedisServer, free_port
from cachewarm.demo.source_process import SourceProcess
from cachewarm.redis_layer import envelope
from cachewarm.redis_layer.keys import INVALIDATION_STREAM, KeyLayout

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = KeyLayout()
DETECT_WINDOW = 60.0


def keyspace(source_url: str, budget: float) -> str:
    return (f'[keyspaces.product]\npattern = "product:{{id}}"\nsource = "{source_url}/products/{{id}}"\n'
            f'ttl = 3600\nversion_field = "version"\naudit_budget = {budget}\n')


@dataclass
class Node:
    process: subprocess.Popen[bytes]
    metrics_port: int
    log: Path

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def total(self, name: str, **labels: str) -> float:
        return sum(v for (n, ls), v in self.samples().items()
                   if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


@contextlib.contextmanager
def sidecar(tmp: Path, redis_url: str, config: Path) -> Iterator[Node]:
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CACHEWARM_")},
           "CACHEWARM_REDIS_URL": redis_url, "CACHEWARM_CONFIG": str(config), "CACHEWARM_METRICS_PORT": str(port),
           "CACHEWARM_HOT_HALF_LIFE": "3600", "PYTHONPATH": str(ROOT)}
    log = tmp / f"sidecar-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cachewarm.worker.sidecar", "--parent", str(os.getpid())],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    node = Node(proc, port, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                node.samples()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise RuntimeError("the sidecar did not start:\n" + tail) from None
                time.sleep(0.2)
        yield node
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def warm(settings: Settings, keys: list[str]) -> None:
    with Cache(settings=settings) as cache:
        for _ in range(3):
            for key in keys:
                cache.get(key)
        cache.flush_stats()


def cached_version(client: redis.Redis, key: str) -> int | None:
    head = client.getrange(LAYOUT.value(key), 0, envelope.HEAD - 1)
    return envelope.header(head).version if head else None


def audit_requests(source: SourceProcess) -> int:
    return int(source.stats().get("by_agent", {}).get(USER_AGENT, 0))


def warmed(tmp: Path, server: RedisServer, source: SourceProcess, *, budget: float,
           keys: int) -> tuple[redis.Redis, Path, Settings, list[str]]:
    """A flushed cache with the keyspace at `budget` and `keys` products warmed: (client, config file, settings,
    key names)."""
    client = redis.Redis.from_url(server.url(0))
    client.flushall()
    config = tmp / "cachewarm.toml"
    config.write_text(keyspace(source.url, budget))
    settings = Settings.load(redis_url=server.url(0), config=config)
    names = [f"product:{i}" for i in range(keys)]
    warm(settings, names)
    return client, config, settings, names


# ------------------------------------------------------------------------------------------------- detect


def detect(tmp: Path, server: RedisServer, source: SourceProcess, *, budget: float, keys: int, changed: int,
           read_rounds: int) -> dict[str, Any]:
    client, config, settings, names = warmed(tmp, server, source, budget=budget, keys=keys)
    stale = random.Random(28).sample(range(keys), changed)
    base_versions = {i: int(source.bump(i)["version"]) for i in stale}  # nobody publishes: the writer's bug
    with sidecar(tmp, server.url(0), config) as node:
        source.reset_stats()
        started = time.monotonic()
        gone: dict[int, float] = {}
        while len(gone) < changed and time.monotonic() - started < DETECT_WINDOW:
            for i in stale:
                if i not in gone:
                    version = cached_version(client, f"product:{i}")
                    if version is None or version >= base_versions[i]:
                        gone[i] = time.monotonic() - started
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        requests = audit_requests(source)
        untouched = sum(cached_version(client, n) == 1 for i, n in enumerate(names) if i not in stale)
        read = read_path(settings, read_rounds) if read_rounds else None
        out = {
            "budget": budget, "found": node.total("cachewarm_audit_inconsistencies_total"),
            "missed": node.total("cachewarm_audit_inconsistencies_total", cause="missed"),
            "repairs": node.total("cachewarm_audit_repairs_total"), "repaired_60s": len(gone),
            "p50": statistics.median(gone.values()) if gone else None,
            "last": max(gone.values()) if len(gone) == changed else None,
            "audit_rate": requests / elapsed, "untouched": untouched, "read": read}
    client.close()
    return out


# --------------------------------------------------------------------------------------------------- read


def read_path(settings: Settings, rounds: int) -> tuple[float, float]:
    """(median ratio, p99 ratio) of `Cache.get` on a hit against a raw GET + json.loads of the same value."""
    raw = redis.Redis.from_url(settings.redis_url, socket_timeout=settings.redis_timeout)
    key = "product:0"
    with Cache(settings=settings) as cache:
        value = cache.get(key)
        raw.set("bench:raw", envelope.dumps(value))
        results = interleave_sync({"raw": lambda: json.loads(raw.get("bench:raw")),  # type: ignore[arg-type]
                                   "cache": lambda: cache.get(key)}, rounds, 200)
    raw.close()
    med = statistics.median(results["cache"]) / statistics.median(results["raw"])
    p99 = percentile(results["cache"], 99) / percentile(results["raw"], 99)
    return med, p99


# ------------------------------------------------------------------------------------------------- steady


def steady(tmp: Path, server: RedisServer, source: SourceProcess, *, budget: float, keys: int, rate: float,
           seconds: float) -> dict[str, Any]:
    client, config, settings, names = warmed(tmp, server, source, budget=budget, keys=keys)
    stop = threading.Event()
    sent = [0]

    def driver() -> None:
        rng = random.Random(5)
        with httpx.Client(base_url=source.url, timeout=10) as http:
            begun = time.monotonic()
            while not stop.is_set():
                due = int((time.monotonic() - begun) * rate) - sent[0]
                if due > 0:
                    ids = [rng.randrange(keys) for _ in range(due)]
                    versions = http.post("/_control/bump", json={"ids": ids}).json()["versions"]
                    pipe = client.pipeline(transaction=False)
                    now_ms = int(time.time() * 1000)
                    for i, version in zip(ids, versions, strict=True):
                        pipe.xadd(INVALIDATION_STREAM, {"key": f"product:{i}", "version": version, "ts": now_ms})
                    pipe.execute()
                    sent[0] += due
                time.sleep(0.01)

    def reader() -> None:
        with Cache(settings=settings) as cache:
            rng = random.Random(6)
            while not stop.wait(0.005):
                cache.get(names[rng.randrange(keys)])

    with sidecar(tmp, server.url(0), config) as node:
        source.reset_stats()
        threads = [threading.Thread(target=driver), threading.Thread(target=reader)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        stats = source.stats()
        requests = int(stats.get("by_agent", {}).get(USER_AGENT, 0))
        time.sleep(3)  # the re-checks of the last mismatches
        out = {"budget": budget, "events": sent[0] / elapsed, "seconds": elapsed,
               "inconsistent": node.total("cachewarm_audit_inconsistencies_total"),
               "verdicts": sum(node.total("cachewarm_audit_checks_total", result=r)
                               for r in ("consistent", "resolved", "inconsistent")),
               "resolved": node.total("cachewarm_audit_checks_total", result="resolved"),
               "audit_rate": requests / elapsed, "source_rate": stats["requests"] / elapsed}
    client.close()
    return out


# --------------------------------------------------------------------------------------------------- main


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--scenario", choices=["detect", "steady", "all"], default="detect",
                        help="detect (with the read-path check), steady, or all")
    parser.add_argument("--budget", type=float, default=5.0, help="audit_budget, source requests/s")
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--changed", type=int, default=20)
    parser.add_argument("--steady-keys", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=120.0, help="steady: measured duration")
    parser.add_argument("--baseline-seconds", type=float, default=30.0, help="steady: the baseline's duration")
    parser.add_argument("--latency", type=float, default=0.01, help="the source's latency, s")
    parser.add_argument("--read-rounds", type=int, default=300)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.scenario, args.seconds, args.baseline_seconds, args.read_rounds = "all", 10.0, 5.0, 50
    with tempfile.TemporaryDirectory(prefix="cachewarm-bench-audit-") as name, RedisServer() as server, \
            SourceProcess(latency=args.latency, items=max(args.keys, args.steady_keys)) as source:
        tmp = Path(name)
        if args.scenario in ("detect", "all"):
            rows = []
            for budget in (0.0, args.budget):
                r = detect(tmp, server, source, budget=budget, keys=args.keys, changed=args.changed,
                           read_rounds=args.read_rounds)
                med, p99 = r["read"] if r["read"] else (None, None)
                rows.append(["baseline: auditor off" if budget == 0 else f"auditor at {budget:g}/s",
                             f"{r['found']:.0f}/{args.changed}", f"{r['missed']:.0f}", f"{r['repairs']:.0f}",
                             f"{r['repaired_60s']}/{args.changed}", _fmt(r["p50"]), _fmt(r["last"]),
                             f"{r['untouched']}/{args.keys - args.changed}", f"{r['audit_rate']:.2f}",
                             _fmt(med, ".2f") + "x", _fmt(p99, ".2f") + "x"])
            print_table(f"detect: {args.keys} hot keys, {args.changed} changed at the source without an event "
                        f"(window {DETECT_WINDOW:g} s)",
                        ["node", "found", "missed", "repairs", "gone <= 60 s", "p50 s", "last s", "others kept",
                         "audit req/s", "get/raw med", "get/raw p99"], rows,
                        notes=[f"goals: {args.changed}/{args.changed} found, each 'missed', all repaired within "
                               f"60 s at 5 req/s; Cache.get hit within 1.10x of raw GET + json.loads (median)"])
        if args.scenario in ("steady", "all"):
            rows = []
            for budget, seconds in ((0.0, args.baseline_seconds), (args.budget, args.seconds)):
                r = steady(tmp, server, source, budget=budget, keys=args.steady_keys, rate=args.rate,
                           seconds=seconds)
                rows.append(["baseline: auditor off" if budget == 0 else f"auditor at {budget:g}/s",
                             f"{r['seconds']:.0f}", f"{r['events']:.0f}", f"{r['verdicts']:.0f}",
                             f"{r['resolved']:.0f}", f"{r['inconsistent']:.0f}", f"{r['audit_rate']:.2f}",
                             "-" if budget == 0 else f"{r['audit_rate'] / budget:.1%}", f"{r['source_rate']:.0f}"])
            print_table(f"steady: {args.rate:g} correct invalidations/s over {args.steady_keys} keys",
                        ["node", "s", "events/s", "checks", "resolved", "inconsistent", "audit req/s",
                         "of budget", "source req/s"], rows,
                        notes=["goals: 0 inconsistent; audit requests within budget + 5 % (of budget <= 105 %)"])


if __name__ == "__main__":
    main()
