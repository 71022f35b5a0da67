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
    try:
        counts = _pin_and_load(settings, by_space, wanted)
    except redis.RedisError as exc:
        # One line, no traceback, and never the URL (it may carry a password).
        click.echo(f"cachewarm warm: redis failed: {type(exc).__name__}", err=True)
        raise SystemExit(1) from None
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    click.echo(f"warmed and pinned {len(wanted)} keys: {summary}")
    if counts.get(RefreshOutcome.ERROR) or counts.get(RefreshOutcome.UNKNOWN):
        raise SystemExit(1)


def _pin_and_load(settings: Settings, by_space: dict[str, list[str]], wanted: list[str]) -> Counter[str]:
    layout = KeyLayout(settings.key_prefix)
    client = sync_client(settings.redis_url, timeout=5.0, cluster=settings.redis_cluster)
    try:
        for space, members in by_space.items():
            pin(client, layout, space, members)
    finally:
        client.close()
    if len(wanted) >= BAR_FROM:
        with click.progressbar(length=len(wanted), label="warming", file=sys.stderr) as bar:  # type: ignore[operator]
            counts = asyncio.run(load(settings, wanted, cast(Callable[[int], None], bar.update)))
    else:
        counts = asyncio.run(load(settings, wanted, lambda n: None))
    return counts


async def load(settings: Settings, keys: list[str], progress: Callable[[int], None]) -> Counter[str]:
    """Loads keys through the refresh path (fenced writes, rate budget, retries), `BATCH` at a time."""
    ctx = RefreshContext.open(settings, f"warm.{worker_id()}", timeout=5.0)
    counts: Counter[str] = Counter()
    try:
        for start in range(0, len(keys), BATCH):
            chunk = keys[start:start + BATCH]
            counts.update(await refresh_batch(ctx, chunk, force=True))
            progress(len(chunk))
    finally:
        await ctx.aclose()
    return counts
