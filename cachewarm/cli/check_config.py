"""`cachewarm check-config`: validates settings and keyspaces; one line and exit 2 on the first error."""

from __future__ import annotations

import click

from ..redis_layer.urls import mask_url
from .options import load_settings


@click.command("check-config")
def check_config() -> None:
    """Validate the environment and the keyspace file."""
    settings = load_settings(require_config=True)
    names = settings.load_keyspaces().names()
    click.echo(f"ok: {len(names)} keyspace(s) ({', '.join(names)}) in {settings.config}; "
               f"cache {mask_url(settings.redis_url)}, broker {mask_url(settings.broker_url)}")
