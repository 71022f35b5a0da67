"""What the suite runs on is what requirements-lock.txt pins: every locked package that is installed has the locked
version, and every locked version has its hashes.

`make test` syncs `.venv` to the lock; this catches an environment that drifted from it (a hand-installed upgrade, a
stale `.venv`). `make test-latest` / `make test-lowest` resolve the ranges on purpose and say so in
CACHEWARM_TRY_RESOLUTION: there the drift check is skipped, with that reason.
"""

from __future__ import annotations

import os
import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements-lock.txt"
# `name==version [; marker] \` then its `--hash=sha256:...` lines (uv pip compile --generate-hashes).
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)")


def _pins() -> list[tuple[str, Version, int]]:
    """(name, version, number of hashes) per pinned line; a package may be pinned twice under different markers
    (Django 6 for Python 3.12+, 5.2 before)."""
    pins: list[tuple[str, Version, int]] = []
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if match := PIN.match(line):
            pins.append((canonicalize_name(match[1]), Version(match[2]), 0))
        elif line.strip().startswith("--hash=sha256:") and pins:
            name, version, hashes = pins[-1]
            pins[-1] = (name, version, hashes + 1)
    return pins


def test_the_lock_pins_every_dependency_with_hashes() -> None:
    pins = _pins()
    assert all(hashes for _, _, hashes in pins), [name for name, _, hashes in pins if not hashes]
    names = {name for name, _, _ in pins}
    assert {"celery", "redis", "hiredis", "httpx", "aiohttp", "prometheus-client", "pydantic-settings", "click",
            "django", "sqlalchemy", "psycopg", "pytest", "mypy", "ruff", "setuptools"} <= names


@pytest.mark.skipif(bool(os.environ.get("CACHEWARM_TRY_RESOLUTION")),
                    reason="make test-latest / test-lowest resolve the ranges instead of the lock")
def test_every_installed_locked_package_has_the_locked_version() -> None:
    locked: dict[str, set[Version]] = {}
    for name, version, _ in _pins():
        locked.setdefault(name, set()).add(version)
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version) for d in metadata.distributions()}
    drifted = {name: (str(installed[name]), sorted(map(str, versions))) for name, versions in locked.items()
               if name in installed and installed[name] not in versions}
    assert not drifted, f"installed != {LOCK.name} (installed, locked): {drifted}; run `make .venv/.installed`"
    assert {"celery", "redis", "httpx", "pytest"} <= installed.keys() & locked.keys()
