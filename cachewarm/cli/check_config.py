"""`cachewarm check-config [--ping]`: validates settings and keyspaces (offline); one line and exit 2 on the first
error. With --ping it also connects to the cache, the broker and each keyspace's source, and says which answered."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import click

from ..config.keyspaces import Keyspace
from ..redis_layer.urls import mask_url, unavailable
from ..settings import Settings
from ..tasks.reachable import broker_failure, cache_failure
from .options import load_settings

TIMEOUT = 3.0


@click.command("check-config")
@click.option("--ping", is_flag=True, help="Also connect to the cache, the broker and each keyspace's source host "
              "(HTTP: a TCP connection to its host and port; python: its module imported) and say which answered; "
              "exit status 1 when one did not.")
def check_config(ping: bool) -> None:
    """Validate the environment and the keyspace file (offline unless --ping). Exit status 2 on a bad setting or
    keyspace, or a file with no keyspace."""
    settings = load_settings(require_keyspaces=True)
    registry = settings.load_keyspaces()
    names = registry.names()
    click.echo(f"ok: {len(names)} keyspace(s) ({', '.join(names)}) in {settings.config}; "
               f"cache {mask_url(settings.redis_url)}, broker {mask_url(settings.broker_url)}")
    if not ping:
        return
    failed = 0
    for what, url, failure in _pings(settings, list(registry)):
        failed += failure is not None
        detail = "answered" if failure is None else "did not answer (" + failure.split(" (", 1)[-1]
        click.echo(f"{what} {url}: {detail}")
    if failed:
        raise SystemExit(1)


def _pings(settings: Settings, keyspaces: list[Keyspace]) -> list[tuple[str, str, str | None]]:
    """(what, its masked URL, None when it answered or the line saying it did not)."""
    out = [("cache", mask_url(settings.redis_url), cache_failure(settings, timeout=TIMEOUT)),
           ("broker", mask_url(settings.broker_url), broker_failure(settings, timeout=TIMEOUT))]
    for ks in keyspaces:
        source = ks.config.source
        if source.startswith("python:"):  # imported when the keyspaces loaded: a failure was a ConfigError then
            out.append((f"source {ks.name}", source + " (imported)", None))
            continue
        parts = urlsplit(source.split("{", 1)[0])
        port = parts.port or (443 if parts.scheme == "https" else 80)
        base = f"{parts.scheme}://{parts.netloc.rpartition('@')[2] or parts.hostname}"
        failure = None
        try:
            socket.create_connection((parts.hostname or "", port), timeout=TIMEOUT).close()
        except OSError as exc:
            failure = unavailable("source", base, exc)
        out.append((f"source {ks.name}", mask_url(base), failure))
    return out
