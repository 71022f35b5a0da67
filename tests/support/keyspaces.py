"""The one keyspace-config writer: a TOML text (indented as in the test) to `cachewarm.toml` in a directory."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_config(directory: Path, text: str) -> Path:
    """Writes `text`, dedented, to `directory`/cachewarm.toml and returns that path."""
    path = directory / "cachewarm.toml"
    path.write_text(textwrap.dedent(text))
    return path
