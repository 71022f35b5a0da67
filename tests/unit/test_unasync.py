"""The sync client is generated from the async one (tools/unasync.py): the committed file must be up to date."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _unasync() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync", ROOT / "tools" / "unasync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sync_client_is_generated_from_the_async_one() -> None:
    unasync = _unasync()
    for source, target in unasync.FILES.items():
        expected = unasync.unasync(source.read_text(encoding="utf-8"))
        assert target.read_text(encoding="utf-8") == expected, (
            f"{target.relative_to(ROOT)} is out of date: run `.venv/bin/python tools/unasync.py`")


def test_the_generated_client_has_no_async_left() -> None:
    unasync = _unasync()
    for target in unasync.FILES.values():
        text = target.read_text(encoding="utf-8")
        for word in ("async def", "async with", "async for", "await ", "asyncio", "AsyncCache", "Awaitable", "aclose"):
            assert word not in text, f"{target.relative_to(ROOT)} still says {word!r}"
