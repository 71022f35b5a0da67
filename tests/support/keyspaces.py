"""The one keyspace-config writer: a TOML text (indented as in the test) to `cachewarm.toml` in a directory."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_config(directory: Path, text: str) -> Path:
    """Writes `text`, dedented, to `directory`/cachewarm.toml and returns that path."""
    path = directory / "cachewarm.toml"
    path.write_text(textwrap.dedent(text))
    return path


def product_keyspace(source_url: str, *, ttl: float, refresh_ahead: float, max_stale: float = 10,
                     extra: str = "") -> str:
    """The `product:{id}` keyspace over the demo source's `/products/{id}`: what the end-to-end and fault tests warm.
    `extra` adds TOML lines (e.g. ``rate = 10``)."""
    lines = [
        "[keyspaces.product]",
        'pattern = "product:{id}"',
        f'source = "{source_url}/products/{{id}}"',
        f"ttl = {ttl}",
        f"refresh_ahead = {refresh_ahead}",
        f"max_stale = {max_stale}",
    ]
    return "\n".join([*lines, *([extra] if extra else [])]) + "\n"
