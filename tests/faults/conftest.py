"""Fixtures of the fault suite: a product source, keyspace files."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cachewarm.demo.source import SourceServer


@pytest.fixture
def source() -> Iterator[SourceServer]:
    """The demo product API in this process, 50 ms per read."""
    with SourceServer(latency=0.05) as server:
        yield server


@pytest.fixture
def keyspace_file(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str) -> Path:
        path = tmp_path / "cachewarm.toml"
        path.write_text(textwrap.dedent(text))
        return path

    return write


