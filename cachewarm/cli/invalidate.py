"""`cachewarm invalidate KEY... [--tag TAG]... [--version N] [--dry-run]`: publishes invalidation events."""

from __future__ import annotations

import click
import redis

from ..invalidation.publish import event_fields, publish_events
from ..invalidation.stream_state import read_stream_state
from ..redis_layer.connections import sync_client
from ..redis_layer.keys import KeyLayout
from ..settings import Settings
from .options import load_settings


@click.command("invalidate")
@click.argument("keys", nargs=-1)
@click.option("--tag", "tags", multiple=True, help="Invalidate every key carrying this tag (repeatable).")
@click.option("--version", type=click.IntRange(min=0), default=None,
              help="The committed version of the (single) KEY: nothing older is cached afterwards.")
@click.option("--dry-run", is_flag=True,
              help="List what would be invalidated (each key, and the keys each tag covers, cached or not) and "
                   "publish nothing.")
def invalidate(keys: tuple[str, ...], tags: tuple[str, ...], version: int | None, dry_run: bool) -> None:
    """Publish invalidations for KEYs and tags to the workers (stream cachewarm:invalidations).

    Warns on stderr (exit status still 0) when no worker's consumer has read the stream lately: the events then
    wait in the stream until a worker starts."""
    if not keys and not tags:
        raise click.UsageError("give at least one KEY or --tag")
    if version is not None and (len(keys) != 1 or tags):
        raise click.UsageError("--version needs exactly one KEY and no --tag")
    try:
        events = [event_fields(key, version=version) for key in keys] + [event_fields(tag=tag) for tag in tags]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    settings = load_settings()
    if dry_run:
        _dry_run(settings, keys, tags)
        return
    ids = publish_events(events, settings=settings)  # a Redis failure: one line, exit 1 (cli/__init__.py)
    for fields, entry_id in zip(events, ids, strict=True):
        what = f"key {fields['key']}" if "key" in fields else f"tag {fields['tag']}"
        version_note = f" version {fields['version']}" if "version" in fields else ""
        click.echo(f"published {entry_id}: {what}{version_note}")
    _warn_without_consumer(settings)


def _client(settings: Settings) -> redis.Redis:
    return sync_client(settings.redis_url, timeout=max(settings.redis_timeout, 2.0), cluster=settings.redis_cluster)


def _warn_without_consumer(settings: Settings) -> None:
    client = _client(settings)
    try:
        state = read_stream_state(client, KeyLayout(settings.key_prefix))
    except redis.RedisError:
        return  # published; whether anyone listens is only a hint
    finally:
        client.close()
    if not state.alive:
        idle = [c.idle for c in state.consumers if c.idle is not None]
        seen = f"the last read was {min(idle):.0f} s ago" if idle else "none has ever read it"
        click.echo(f"cachewarm invalidate: warning: no worker's invalidation consumer is running ({seen}); the "
                   f"events wait in the stream until one starts (cachewarm run, or celery -A cachewarm.worker "
                   f"worker)", err=True)


def _dry_run(settings: Settings, keys: tuple[str, ...], tags: tuple[str, ...]) -> None:
    """Each key with whether it is cached, and each tag's members (its set ``t:{T}``, which a tag invalidation
    walks) likewise; publishes nothing."""
    layout = KeyLayout(settings.key_prefix)
    registry = settings.load_keyspaces()
    client = _client(settings)
    try:
        members = {tag: sorted(m.decode("utf-8", "surrogateescape") if isinstance(m, bytes) else str(m)
                               for m, _ in client.zscan_iter(layout.tag(tag), count=1000)) for tag in tags}
        named = list(dict.fromkeys([*keys, *(key for listed in members.values() for key in listed)]))
        pipe = client.pipeline(transaction=False)
        for key in named:
            pipe.exists(layout.value(key))
        cached = dict(zip(named, (bool(n) for n in pipe.execute()), strict=True)) if named else {}
    finally:
        client.close()

    def state(key: str) -> str:
        found = registry.find(key)
        where = f"keyspace {found[0].name}" if found else "no keyspace"
        return f"{'cached' if cached[key] else 'not cached'}, {where}"

    for key in keys:
        click.echo(f"would invalidate key {key} ({state(key)})")
    for tag in tags:
        listed = members[tag]
        click.echo(f"would invalidate tag {tag}: {len(listed)} key(s), {sum(cached[k] for k in listed)} cached")
        for key in listed:
            click.echo(f"  {key} ({state(key)})")
    click.echo("dry run: nothing published")
