"""`cachewarm invalidate KEY... [--tag TAG]... [--version N]`: publishes invalidation events."""

from __future__ import annotations

import click

from ..errors import CacheUnavailable
from ..invalidation.publish import event_fields, publish_events
from ..redis_layer.urls import mask_url
from .options import load_settings


@click.command("invalidate")
@click.argument("keys", nargs=-1)
@click.option("--tag", "tags", multiple=True, help="Invalidate every key carrying this tag (repeatable).")
@click.option("--version", type=click.IntRange(min=0), default=None,
              help="The committed version of the (single) KEY: nothing older is cached afterwards.")
def invalidate(keys: tuple[str, ...], tags: tuple[str, ...], version: int | None) -> None:
    """Publish invalidations for KEYs and tags to the workers (stream cachewarm:invalidations)."""
    if not keys and not tags:
        raise click.UsageError("give at least one KEY or --tag")
    if version is not None and (len(keys) != 1 or tags):
        raise click.UsageError("--version needs exactly one KEY and no --tag")
    try:
        events = [event_fields(key, version=version) for key in keys] + [event_fields(tag=tag) for tag in tags]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    settings = load_settings()
    try:
        ids = publish_events(events, settings=settings)
    except CacheUnavailable as exc:
        click.echo(f"cachewarm: {exc} (redis {mask_url(settings.redis_url)})", err=True)
        raise SystemExit(1) from None
    for fields, entry_id in zip(events, ids, strict=True):
        what = f"key {fields['key']}" if "key" in fields else f"tag {fields['tag']}"
        version_note = f" version {fields['version']}" if "version" in fields else ""
        click.echo(f"published {entry_id}: {what}{version_note}")
