"""`cachewarm status`: what the cluster is doing, from Redis alone (no worker or Prometheus needed).

The hit ratio "since" a time compares the read counters now with the newest snapshot taken at or before that time
(metrics/history.py: metrics endpoints add one every 10 s, and so does each run of this command). When no snapshot
is that old, the oldest one is used and the actual window is printed; with no snapshot at all, the ratio is over
everything the counters hold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import click
import redis

from ..audit import ledger
from ..invalidation.stream_state import describe, read_stream_state
from ..metrics import history
from ..metrics.cluster import ClusterSnapshot, read_snapshot
from ..redis_layer import envelope
from ..redis_layer.connections import sync_client
from ..redis_layer.keys import HOT_SHARDS, KeyLayout
from ..redis_layer.popularity import decayed_reads
from ..redis_layer.urls import mask_url
from ..settings import Settings
from ..warming.heartbeat import Heartbeat, read_heartbeats
from .options import load_settings, redis_failure


@dataclass
class HotKey:
    key: str
    reads: float  # decayed read count (each read halves in weight per half-life)
    ttl: float | None  # seconds until the value stops being fresh (negative: stale); None: not cached
    age: float | None  # seconds since the value was fetched from the source


@dataclass
class KeyspaceStatus:
    name: str
    hits: float
    misses: float
    window_hits: float
    window_misses: float
    stale: float
    hot_keys: float
    backlog_keys: float
    backlog_seconds: float
    top: list[HotKey] = field(default_factory=list)
    local_hits: float = 0.0  # of the hits, those a process's near cache answered (local = true keyspaces)
    left_out: float = 0.0    # due keys the refresh budget left out at the last scan
    left_out_total: float = 0.0  # ... counted at every scan
    worth_bound: float | None = None  # decayed reads a key needs to be worth a refresh (value.py)

    @property
    def hit_ratio(self) -> float | None:
        reads = self.window_hits + self.window_misses
        return self.window_hits / reads if reads else None


def top_keys(client: redis.Redis, layout: KeyLayout, keyspaces: Sequence[str], n: int, now_ms: int,
             half_life: float) -> dict[str, list[HotKey]]:
    """The n most popular keys of each keyspace with their envelope's expiry and fetch time: two pipelines."""
    if n <= 0:
        return {name: [] for name in keyspaces}
    pipe = client.pipeline(transaction=False)
    shards = [(name, shard) for name in keyspaces for shard in range(HOT_SHARDS)]  # keys.py: hot sets are sharded
    for name, shard in shards:
        pipe.zrevrange(layout.hot(name, shard), 0, n - 1, withscores=True)
        pipe.get(layout.hot_epoch(name, shard))
    results = pipe.execute()
    ranked: list[tuple[str, str, float]] = []
    for name in keyspaces:
        merged: list[tuple[str, str, float]] = []
        for i, (space, _) in enumerate(shards):
            if space == name:
                members, epoch = results[2 * i], results[2 * i + 1]
                epoch_ms = float(epoch) if epoch is not None else None
                merged += [(name, member.decode(), decayed_reads(score, now_ms, epoch_ms, half_life))
                           for member, score in members]
        ranked += sorted(merged, key=lambda item: -item[2])[:n]
    pipe = client.pipeline(transaction=False)
    for _, key, _ in ranked:
        pipe.getrange(layout.value(key), 0, envelope.TIMES - 1)
    headers = pipe.execute()
    out: dict[str, list[HotKey]] = {name: [] for name in keyspaces}
    for (name, key, reads), header in zip(ranked, headers, strict=True):
        ttl = age = None
        if header and len(header) == envelope.TIMES:
            ttl = (envelope.expires_ms(header) - now_ms) / 1000
            age = (now_ms - envelope.fetched_ms(header)) / 1000
        out[name].append(HotKey(key, reads, ttl, age))
    return out


def gather(settings: Settings, *, since: float, top: int) -> dict[str, Any]:
    """The status as a JSON-ready dict; raises redis.RedisError."""
    layout = KeyLayout(settings.key_prefix)
    names = settings.load_keyspaces().names()
    client = sync_client(settings.redis_url, timeout=max(settings.redis_timeout, 2.0), cluster=settings.redis_cluster)
    try:
        snap = read_snapshot(client, layout, names, hot_half_life=settings.hot_half_life,
                             hot_threshold=settings.hot_threshold)
        past = history.at_or_before(client, layout, snap.now_ms - int(since * 1000))
        history.record(client, layout, snap.stats, names, snap.now_ms)
        hot = top_keys(client, layout, names, top, snap.now_ms, settings.hot_half_life)
        beats = read_heartbeats(client, layout)
        stream = read_stream_state(client, layout)
        audits = ledger.last_hour(client, layout, names, snap.now_ms)  # the auditor's last hour (audit/ledger.py)
    finally:
        client.close()
    spaces = [_keyspace(snap, name, past, hot[name]) for name in names]
    window = (snap.now_ms - past.at_ms) / 1000 if past is not None else None
    return {
        "redis": mask_url(settings.redis_url),
        "time_ms": snap.now_ms,
        "workers": snap.workers,
        "workers_exact": snap.workers_exact,
        "hosts": hosts(beats),
        "invalidation_pending": stream.pending,
        "invalidation_undelivered": stream.undelivered,
        "dead_letters": stream.dead_letters,
        # the stream as the workers' consumers see it (invalidation/stream_state.py)
        "invalidations": stream.as_dict(),
        # Seconds the hit ratio covers; null: since the counters started.
        "hit_ratio_window": window,
        "keyspaces": {ks.name: {
            "hit_ratio": ks.hit_ratio, "hits": ks.hits, "misses": ks.misses, "window_hits": ks.window_hits,
            "window_misses": ks.window_misses, "stale_served": ks.stale, "hot_keys": ks.hot_keys,
            "backlog_keys": ks.backlog_keys, "backlog_seconds": ks.backlog_seconds, "local_hits": ks.local_hits,
            "left_out": ks.left_out, "left_out_total": ks.left_out_total, "worth_bound": ks.worth_bound,
            "top": [vars(k) for k in ks.top]} for ks in spaces},
        # the consistency auditor's checks over the last hour, and the "nines" they show (docs/AUDIT.md)
        "audit": {name: tally.as_dict() for name, tally in audits.items()},
    }


def hosts(beats: list[Heartbeat]) -> list[dict[str, Any]]:
    """The live worker hosts (Celery nodes), each with its processes, batches in flight and last heartbeat."""
    nodes: dict[str, list[Heartbeat]] = {}
    for beat in beats:
        nodes.setdefault(beat.node, []).append(beat)
    out = []
    for node, members in sorted(nodes.items()):
        processes = _processes(members)
        out.append({
            "node": node,
            "processes": sorted(processes.values(), key=lambda p: (ROLE_ORDER.get(p["role"], 9), p["pid"] or 0)),
            "in_flight": sum(p["in_flight"] or 0 for p in processes.values()),
            "last_heartbeat_age": min(b.age for b in members),
        })
    return out


# How a host's processes are listed: the worker's main process, its sidecar, then the pool (the children that
# have refreshed beat for themselves; the others, an embedded beat among them, are only named by the sidecar).
ROLE_ORDER = {"main": 0, "sidecar": 1, "pool": 2, "child": 3}


def _processes(beats: list[Heartbeat]) -> dict[int | None, dict[str, Any]]:
    """One entry per pid of a host: its own heartbeat if it beats, else what its node's heartbeat says of it."""
    out: dict[int | None, dict[str, Any]] = {}
    for beat in sorted(beats, key=lambda b: b.role == "node"):  # processes' own beats first
        if beat.role != "node":
            out[beat.pid] = {"pid": beat.pid, "role": beat.role, "in_flight": beat.in_flight,
                             "heartbeat_age": beat.age}
            continue
        out.setdefault(beat.pid, {"pid": beat.pid, "in_flight": None, "heartbeat_age": beat.age})["role"] = "sidecar"
        named = [("main", beat.extra.get("worker"))] + [("child", pid) for pid in beat.extra.get("children") or []]
        for role, pid in named:
            if isinstance(pid, int) and pid not in out:
                out[pid] = {"pid": pid, "role": role, "in_flight": None, "heartbeat_age": beat.age}
    return out


def _keyspace(snap: ClusterSnapshot, name: str, past: history.Snapshot | None, top: list[HotKey]) -> KeyspaceStatus:
    hits, misses = snap.stat("hit", name), snap.stat("miss", name)
    base_hits = past.hits.get(name, 0.0) if past else 0.0
    base_misses = past.misses.get(name, 0.0) if past else 0.0
    return KeyspaceStatus(
        name, hits, misses, max(0.0, hits - base_hits), max(0.0, misses - base_misses), snap.stat("stale", name),
        snap.hot_keys.get(name, 0.0), snap.refresh.get("backlog_keys:" + name, 0.0),
        snap.refresh.get("backlog_seconds:" + name, 0.0), top, snap.stat("local_hit", name),
        snap.refresh.get("left_out_keys:" + name, 0.0), snap.refresh.get("left_out:" + name, 0.0),
        snap.refresh.get("worth_bound:" + name))


def _num(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def render(status: dict[str, Any]) -> str:
    window = status["hit_ratio_window"]
    since = f"last {window:.0f}s" if window is not None else "all time"
    workers = f"{status['workers']}" + ("" if status["workers_exact"] else "+")
    lines = [f"cachewarm status of {status['redis']}", f"workers: {workers}",
             f"invalidations {describe(status['invalidations'])}", ""]
    rows = [["keyspace", f"hit ratio ({since})", "hits", "local hits", "misses", "stale", "hot keys", "backlog",
             "behind s", "left out (budget)", "worth bound"]]
    for name, ks in status["keyspaces"].items():
        ratio = "-" if ks["hit_ratio"] is None else f"{ks['hit_ratio']:.1%}"
        rows.append([name, ratio, f"{ks['hits']:.0f}", f"{ks['local_hits']:.0f}", f"{ks['misses']:.0f}",
                     f"{ks['stale_served']:.0f}", f"{ks['hot_keys']:.0f}", f"{ks['backlog_keys']:.0f}",
                     f"{ks['backlog_seconds']:.1f}", f"{ks['left_out']:.0f} ({ks['left_out_total']:.0f} in all)",
                     _num(ks["worth_bound"], ".2f")])
    lines += _table(rows)
    if status.get("audit"):  # the auditor's last hour
        lines += ["", "consistency (audits of the last hour)"]
        rows = [["keyspace", "checks", "inconsistent", "repaired", "nines"]]
        rows += [[name, str(a["checks"]), str(a["inconsistencies"]), str(a["repairs"]),
                  "-" if a["nines"] is None else (">= " if a["nines_floor"] else "") + f"{a['nines']:.1f}"]
                 for name, a in status["audit"].items()]
        lines += _table(rows)
    if status["hosts"]:
        lines += ["", "worker hosts"]
        rows = [["node", "processes", "batches in flight", "last heartbeat"]]
        rows += [[h["node"], " ".join(f"{p['role']}:{p['pid']}" for p in h["processes"]), str(h["in_flight"]),
                  f"{h['last_heartbeat_age']:.1f} s ago"] for h in status["hosts"]]
        lines += _table(rows)
    for name, ks in status["keyspaces"].items():
        if not ks["top"]:
            continue
        lines += ["", f"hottest keys of {name}"]
        rows = [["key", "reads", "ttl s", "age s"]]
        rows += [[k["key"], _num(k["reads"]), _num(k["ttl"]) if k["ttl"] is not None else "not cached",
                  _num(k["age"])] for k in ks["top"]]
        lines += _table(rows)
    return "\n".join(lines)


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table (with --watch: one "
              "object per line).")
@click.option("--since", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="Hit ratio over the last SECONDS (from stored counter snapshots).")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True,
              help="Hottest keys shown per keyspace.")
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until interrupted (Ctrl-C exits 0).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between redraws with --watch.")
def status(as_json: bool, since: float, top: int, watch: bool, interval: float) -> None:
    """Hot keys, hit ratio, refresh backlog, invalidation stream (undelivered, pending, dead letters, consumers
    alive) and worker hosts, read from Redis. Exits 2 when no keyspace is configured, 1 when Redis fails."""
    settings = load_settings(require_keyspaces=True)
    if not watch:
        data = gather(settings, since=since, top=top)  # a Redis error: one line, exit 1 (cli/__init__.py)
        click.echo(json.dumps(data, indent=2) if as_json else render(data))
        return
    try:
        while True:
            started = time.monotonic()
            try:
                data = gather(settings, since=since, top=top)
                frame = json.dumps(data) if as_json else render(data)
            except redis.RedisError as exc:  # shown in the frame; the watch goes on (Redis may come back)
                frame = redis_failure("status", settings.redis_url, exc)
            if not as_json:
                click.clear()
                frame += f"\n\nevery {interval:g} s; Ctrl-C to stop"
            click.echo(frame)
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return
