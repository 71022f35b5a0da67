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
                     extra: str = "", refresh_worth: float | None = 0.0) -> str:
    """The `product:{id}` keyspace over the demo source's `/products/{id}`: what the end-to-end and fault tests warm.
    `extra` adds TOML lines (e.g. ``rate = 10``). `refresh_worth` is 0 (every key above the hot threshold is
    refreshed: the policy these tests' few reads and short TTLs were written for; refresh by value has its own tests,
    tests/warming/test_scan_value.py); None leaves the default."""
    lines = [
        "[keyspaces.product]",
        'pattern = "product:{id}"',
        f'source = "{source_url}/products/{{id}}"',
        f"ttl = {ttl}",
        f"refresh_ahead = {refresh_ahead}",
        f"max_stale = {max_stale}",
        *([f"refresh_worth = {refresh_worth}"] if refresh_worth is not None else []),
    ]
    return "\n".join([*lines, *([extra] if extra else [])]) + "\n"
