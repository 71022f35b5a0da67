"""`cachewarm simulate TRACE [--config F] [--set KEYSPACE.FIELD=VALUE ...]`: what each candidate setting would
give on a trace of reads (cachewarm/simulation/): hit ratio (all, hottest N), source requests per second, wasted
refreshes, learning misses, keys the budget left out; and, under each, the policy that knows the true read rates.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from ..errors import ConfigError
from ..simulation.run import Row, parse_overrides, run
from ..simulation.trace import read_trace
from .options import load_settings


def _pct(value: float | str) -> str:
    return "-" if isinstance(value, str) or value != value else f"{value * 100:.2f}"


def render(rows: list[Row], hot: int, sample: float, seconds: float, warmup: float) -> str:
    header = ["candidate", "hit %", f"hit % hot{hot}", "src req/s", "refresh/s", "wasted %", "learn miss",
              "left out/s"]
    table = [header]
    for row in rows:
        d = row.as_dict()
        learn = d["learning_misses"]
        table.append([str(d["candidate"]), _pct(d["hit_ratio"]), _pct(d["hot_hit_ratio"]),
                      f"{d['source_per_second']:,.1f}", f"{d['refreshes_per_second']:,.1f}", _pct(d["wasted"]),
                      "-" if isinstance(learn, str) or learn != learn else f"{learn:.2f}",
                      f"{d['left_out_per_second']:,.1f}"])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in table]
    unknown = rows[0].figures.unknown if rows else 0
    notes = [f"{seconds:,.0f} s of reads, the first {warmup:g} s not counted (the hot set learning); sample "
             f"{sample:g} of the keys (source figures scaled up by {1 / sample:g})"]
    if unknown:
        notes.append(f"{unknown:,} reads of keys no keyspace matches were left out")
    notes.append("(true rates): the same settings with each key's true read rate over the window in place of its "
                 "decayed count: the reference the live policy is measured against")
    return "\n".join([*lines, "", *notes])


@click.command("simulate")
@click.argument("trace", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The keyspace file (default: CACHEWARM_CONFIG).")
@click.option("--set", "sets", multiple=True, metavar="KEYSPACE.FIELD=VALUE[,VALUE...]",
              help="A candidate: keyspace fields (or hot_threshold, hot_half_life, scan_interval) on top of the "
                   "configuration; comma-separated values make one candidate each, ';' joins overrides. Repeatable.")
@click.option("--warmup", type=click.FloatRange(min=0), default=None,
              help="Seconds at the trace's start not counted (default: two half-lives, at most a third of the trace).")
@click.option("--hot", type=click.IntRange(min=1), default=500, show_default=True,
              help="The hottest keys whose hit ratio is shown apart.")
@click.option("--latency", "latencies", multiple=True, metavar="KEYSPACE=SECONDS",
              help="A keyspace's source latency (default: the trace header's, else 0.05).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows instead of a table.")
def simulate(trace: Path, config: Path | None, sets: tuple[str, ...], warmup: float | None, hot: int,
             latencies: tuple[str, ...], as_json: bool) -> None:
    """Replay TRACE (one read per line, '<milliseconds> <key>', plain or .gz) through a model of the scan, its
    refreshes, TTLs and misses, and print what each candidate setting would give."""
    if config is not None:
        os.environ["CACHEWARM_CONFIG"] = str(config)
    settings = load_settings(require_keyspaces=True)
    registry = settings.load_keyspaces()
    latency: dict[str, float] = {}
    for item in latencies:
        name, _, value = item.partition("=")
        try:
            latency[name] = float(value)
        except ValueError:
            raise ConfigError(f"--latency {item!r}: expected KEYSPACE=SECONDS, e.g. product=0.05") from None
        if name not in registry.names() or not latency[name] > 0:
            raise ConfigError(f"--latency {item!r}: expected a known keyspace and seconds > 0")
    candidates: list[list[tuple[str, str, str]]] = [[], *parse_overrides(sets, registry)]
    loaded = read_trace(trace)
    if warmup is None:
        warmup = min(2 * settings.hot_half_life, loaded.seconds / 3)
    rows = run(loaded, registry, settings, candidates, warmup=warmup, hot=hot, latency=latency)
    if as_json:
        click.echo(json.dumps([row.as_dict() for row in rows], indent=2))
        return
    click.echo(render(rows, hot, loaded.info.sample, loaded.seconds, warmup))
