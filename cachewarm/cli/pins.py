"""`cachewarm pins [--json]` and `cachewarm unpin KEY... | --all`: the keys `cachewarm warm` pinned always-warm.

Pins live in one set per keyspace (``pin:S``); the scan refreshes a pinned key as if it were hot, whatever its
reads. A key the source no longer has (404) is unpinned by the refresh that finds so.
"""

from __future__ import annotations

import json

import click

from ..config.keyspaces import check_key
from ..redis_layer.connections import sync_client
from ..redis_layer.keys import KeyLayout
from ..warming.hotkeys import unpin as unpin_keys
from .options import fail, load_settings


@click.command("pins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON ({keyspace: [keys]}) for scripts.")
def pins(as_json: bool) -> None:
    """List the pinned keys (`cachewarm warm`) of each keyspace."""
    settings = load_settings(require_keyspaces=True)
    layout = KeyLayout(settings.key_prefix)
    names = settings.load_keyspaces().names()
    client = sync_client(settings.redis_url, timeout=max(settings.redis_timeout, 2.0), cluster=settings.redis_cluster)
    try:  # a Redis error: one line, exit 1 (cli/__init__.py)
        found = {name: sorted(m.decode("utf-8", "surrogateescape") if isinstance(m, bytes) else str(m)
                              for m in client.sscan_iter(layout.pinned(name), count=1000)) for name in names}
    finally:
        client.close()
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    for name, keys in found.items():
        click.echo(f"{name}: {len(keys)} pinned")
        for key in keys:
            click.echo(f"  {key}")


@click.command("unpin")
@click.argument("keys", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Unpin every key of every keyspace.")
def unpin(keys: tuple[str, ...], everything: bool) -> None:
    """Unpin KEYs (or --all): the workers then refresh them only while they are read often enough to be hot."""
    if bool(keys) == everything:
        raise click.UsageError("give KEYs or --all")
    settings = load_settings(require_keyspaces=True)
    layout = KeyLayout(settings.key_prefix)
    registry = settings.load_keyspaces()
    by_space: dict[str, list[str]] = {}
    for key in dict.fromkeys(keys):
        try:
            found = registry.find(check_key(key))
        except ValueError as exc:
            fail(f"cachewarm unpin: {exc}")
        if found is None:
            fail(f"cachewarm unpin: no keyspace pattern matches {key!r}")
        by_space.setdefault(found[0].name, []).append(key)
    client = sync_client(settings.redis_url, timeout=max(settings.redis_timeout, 2.0), cluster=settings.redis_cluster)
    try:
        if everything:
            removed = 0
            for name in registry.names():
                removed += int(client.scard(layout.pinned(name)))
                client.delete(layout.pinned(name))
        else:
            removed = sum(unpin_keys(client, layout, name, members) for name, members in by_space.items())
    finally:
        client.close()
    if everything or removed == sum(len(m) for m in by_space.values()):
        click.echo(f"unpinned {removed} key(s)")
    else:
        click.echo(f"unpinned {removed} key(s); the others were not pinned")
