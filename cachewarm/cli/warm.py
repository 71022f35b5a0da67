"""`cachewarm warm KEY... | --file F`: load keys now through the refresh path and pin them always-warm."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import TextIO, cast

import click
import redis

from ..config.keyspaces import check_key
from ..outcomes import RefreshOutcome
from ..redis_layer import envelope
from ..redis_layer.connections import sync_client
from ..redis_layer.keys import KeyLayout
from ..settings import Settings
from ..warming.context import RefreshContext
from ..warming.heartbeat import worker_id
from ..warming.hotkeys import pin
from ..warming.refresh import refresh_batch
from .options import load_settings

BATCH = 200
BAR_FROM = 50


@click.command()
@click.argument("keys", nargs=-1)
@click.option("--file", "-f", "file_", type=click.File("r"), help="a file of keys, one per line ('-': stdin)")
def warm(keys: tuple[str, ...], file_: TextIO | None) -> None:
    """Load KEYS now and pin them, so the workers keep them warm whether or not they are read."""
    settings = load_settings(require_config=True)
    wanted = list(keys)
    if file_ is not None:
        wanted += [line.strip() for line in file_ if line.strip() and not line.lstrip().startswith("#")]
    wanted = list(dict.fromkeys(wanted))
    if not wanted:
        raise click.UsageError("give keys or --file")
    by_space: defaultdict[str, list[str]] = defaultdict(list)
    for key in wanted:
        try:
            found = settings.load_keyspaces().find(check_key(key))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="KEY") from None
        if found is None:
            raise click.BadParameter(f"no keyspace pattern matches {key!r}", param_hint="KEY")
        by_space[found[0].name].append(key)
    reasons: dict[str, str] = {}
    counts, pinned = _load_and_pin(settings, by_space, wanted, reasons)
    summary = ", ".join(f"{n} {outcome}" + (" (not pinned)" if outcome == RefreshOutcome.NOT_FOUND else "")
                        for outcome, n in sorted(counts.items()))
    if pinned == len(wanted):
        click.echo(f"warmed and pinned {len(wanted)} keys: {summary}")
    else:
        click.echo(f"warmed {len(wanted)} keys, pinned {pinned}: {summary}")
    for reason, failed in _by_reason(reasons).items():  # why the errors, one line per distinct reason
        shown = ", ".join(failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
        click.echo(f"error: {shown}: {reason}", err=True)
    if counts.get(RefreshOutcome.ERROR) or counts.get(RefreshOutcome.UNKNOWN):
        raise SystemExit(1)


def _by_reason(reasons: dict[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for key, reason in reasons.items():
        grouped[reason].append(key)
    return grouped


def _load_and_pin(settings: Settings, by_space: dict[str, list[str]], wanted: list[str],
                  reasons: dict[str, str]) -> tuple[Counter[str], int]:
    """Loads the keys, then pins those the source has: a 404 is never pinned (the workers would ask the source for
    it every scan). A key whose load failed (source down) is pinned, so the workers keep trying; one whose value
    someone else wrote meanwhile is pinned unless that value is a remembered 404. Redis errors propagate (the
    group prints them in one line)."""
    layout = KeyLayout(settings.key_prefix)
    client = sync_client(settings.redis_url, timeout=5.0, cluster=settings.redis_cluster)
    try:
        client.ping()  # Redis down: one line now (cli/__init__.py), not one error per key
        outcomes: dict[str, RefreshOutcome] = {}
        if len(wanted) >= BAR_FROM:
            with click.progressbar(length=len(wanted), label="warming", file=sys.stderr) as bar:  # type: ignore[operator]
                counts = asyncio.run(load(settings, wanted, cast(Callable[[int], None], bar.update), outcomes,
                                          reasons))
        else:
            counts = asyncio.run(load(settings, wanted, lambda n: None, outcomes, reasons))
        pinned = 0
        for space, members in by_space.items():
            keep = _worth_pinning(client, layout, members, outcomes)
            pin(client, layout, space, keep)
            pinned += len(keep)
    finally:
        client.close()
    return counts, pinned


def _worth_pinning(client: redis.Redis, layout: KeyLayout, keys: list[str],
                   outcomes: dict[str, RefreshOutcome]) -> list[str]:
    unsure = [key for key in keys if outcomes.get(key) not in (RefreshOutcome.OK, RefreshOutcome.NOT_FOUND)]
    negative: set[str] = set()
    if unsure:  # written by another loader meanwhile (busy, fenced, skipped): a remembered 404 is not pinned
        pipe = client.pipeline(transaction=False)
        for key in unsure:
            pipe.getrange(layout.value(key), envelope.KIND, envelope.KIND)
        negative = {key for key, kind in zip(unsure, pipe.execute(), strict=True) if kind == envelope.NOT_FOUND}
    return [key for key in keys if outcomes.get(key) is not RefreshOutcome.NOT_FOUND and key not in negative]


async def load(settings: Settings, keys: list[str], progress: Callable[[int], None],
               outcomes: dict[str, RefreshOutcome] | None = None,
               reasons: dict[str, str] | None = None) -> Counter[str]:
    """Loads keys through the refresh path (fenced writes, rate budget, retries), `BATCH` at a time; fills
    `outcomes` (when given) with each key's, and `reasons` with why each error failed."""
    ctx = RefreshContext.open(settings, f"warm.{worker_id()}", timeout=5.0)
    counts: Counter[str] = Counter()
    try:
        for start in range(0, len(keys), BATCH):
            chunk = keys[start:start + BATCH]
            counts.update(await refresh_batch(ctx, chunk, force=True, outcomes=outcomes, reasons=reasons))
            progress(len(chunk))
    finally:
        await ctx.aclose()
    return counts
