"""`cachewarm trace --seconds N --out FILE [--sample SHARE]`: records the live reads of every process reading
through cachewarm (read/tracing.py) as a trace for `cachewarm simulate` (simulation/trace.py)."""

from __future__ import annotations

import time
from pathlib import Path

import click
import redis

from ..read import tracing
from ..redis_layer.connections import sync_client
from ..redis_layer.keys import KeyLayout
from ..settings import Settings
from ..simulation.trace import TraceInfo, open_for_writing
from ..warming.value import measured_miss_cost
from .options import load_settings

DRAIN = 10_000  # lines per LPOP


def drain(client: redis.Redis, key: str) -> list[str]:
    """Every line waiting in the list (LPOP COUNT until empty)."""
    out: list[str] = []
    while True:
        got = client.lpop(key, DRAIN)
        if not got:
            return out
        out += [line.decode("utf-8", "surrogateescape") if isinstance(line, bytes) else str(line)
                for line in got]  # type: ignore[union-attr]


def header(client: redis.Redis, layout: KeyLayout, names: list[str], share: float) -> TraceInfo:
    """The trace's header: the share and each keyspace's measured source latency (refresh:stats)."""
    raw: dict[bytes, bytes] = client.hgetall(layout.refresh_stats)  # type: ignore[assignment]
    stats = {}
    for name, value in raw.items():
        try:
            stats[name.decode()] = float(value)
        except ValueError:
            continue
    latency = {ks: cost for ks in names if (cost := measured_miss_cost(stats, ks)) is not None}
    return TraceInfo(sample=share, latency=latency)


def record(settings: Settings, seconds: float, out: Path, share: float) -> tuple[int, int]:
    """Turns recording on for `seconds`, writes what the processes send to `out`; (lines, distinct keys)."""
    layout = KeyLayout(settings.key_prefix)
    on, reads = layout.prefix + tracing.TRACE_ON, layout.prefix + tracing.TRACE_READS
    grace = 2 * settings.stats_flush_interval + 0.5  # a process's last flush after the switch goes off
    client = sync_client(settings.redis_url, timeout=max(settings.redis_timeout, 2.0), cluster=settings.redis_cluster)
    count = 0
    keys: set[str] = set()
    try:
        info = header(client, layout, settings.load_keyspaces().names(), share)
        client.delete(reads)  # leftovers of a recording whose command died
        with open_for_writing(out) as handle:
            handle.write(info.header() + "\n")
            client.set(on, repr(share), px=int((seconds + grace) * 1000))
            started = time.monotonic()
            try:
                while True:
                    done = time.monotonic() - started >= seconds
                    if done:
                        client.delete(on)
                        time.sleep(grace)
                    for line in drain(client, reads):
                        handle.write(line + "\n")
                        count += 1
                        keys.add(line.partition(" ")[2])
                    if done:
                        break
                    time.sleep(min(0.5, max(0.0, seconds - (time.monotonic() - started))))
            finally:
                client.delete(on)
    finally:
        client.close()
    return count, len(keys)


@click.command("trace")
@click.option("--seconds", type=click.FloatRange(min=0.1), required=True, help="How long to record.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The trace file to write ('.gz': gzip).")
@click.option("--sample", type=click.FloatRange(min=0, min_open=True, max=1), default=1.0, show_default=True,
              help="The share of keys recorded (by a hash of the key: every read of a sampled key, none of the "
                   "others), so a busy site's trace stays small; the simulator scales it back up.")
def trace(seconds: float, out: Path, sample: float) -> None:
    """Record live reads (every process reading through cachewarm, sampled by key) into a trace for `cachewarm
    simulate`. Recording turns itself off if this command dies."""
    settings = load_settings(require_keyspaces=True)
    lines, keys = record(settings, seconds, out, sample)
    click.echo(f"{out}: {lines:,} reads of {keys:,} keys in {seconds:g} s (sample {sample:g})")
