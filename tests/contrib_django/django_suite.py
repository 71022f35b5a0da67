"""Django's own cache tests (``tests/cache/`` of Django's source distribution, for the installed Django), fetched at
test time as any dependency is: ``pip download`` of the sdist by package name, its sha256 checked against
requirements-lock.txt when the lock pins this version, ``tests/cache/*.py`` extracted into a cache directory outside
the repository and reused by later runs. Nothing of Django's is committed here.

    $XDG_CACHE_HOME/cachewarm/django-tests/<version>/cache/{tests.py,models.py,...}   (~/.cache by default)

Offline: ``CACHEWARM_DJANGO_SDIST=/path/to/django-<version>.tar.gz`` uses that file instead of the registry (the
same checks). When neither works, `fetch()` names what failed and how to fix it, and the suite's one test fails
with that message (tests/contrib_django/test_contrib_django_suite.py): never a silent skip.

Also the keyspace row's source: a keyspace (django_suite.toml, pattern ``{key}``) whose source has no item at all,
so that every key of Django's tests is a keyspace key and a miss is Django's "not in the cache".
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SDIST_ENV = "CACHEWARM_DJANGO_SDIST"
FILES = ("__init__.py", "models.py", "tests.py", "tests_async.py", "closeable_cache.py", "failing_cache.py",
         "liberal_backend.py")


class Unavailable(Exception):
    """Django's test module could not be fetched; the message says why and what to do."""


def no_such_item(key: str) -> None:
    """The keyspace row's source: no item for any key (a read-through miss is a miss)."""
    return None


def cache_root(version: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cachewarm" / "django-tests" / version


def locked_sha256s(version: str, lock: Path = REPO / "requirements-lock.txt") -> frozenset[str] | None:
    """The sha256 hashes requirements-lock.txt records for Django `version` (its wheels' and its sdist's); None when
    the lock does not pin that version."""
    try:
        lines = lock.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    pin = re.compile(rf"^django=={re.escape(version)}(\s|;|$)", re.I)
    hashes: set[str] = set()
    inside = False
    for line in lines:
        if re.match(r"^[A-Za-z0-9]", line):  # a pin starts: `name==version [; marker] \`
            inside = bool(pin.match(line))
        elif inside and (match := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            hashes.add(match[1])
    return frozenset(hashes) or None


def _pip() -> list[str]:
    """An ordinary pip: this interpreter's, the repository's (.uv, made by `make`), or the system's python3."""
    import importlib.util

    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    own = REPO / ".uv" / "bin" / "pip"
    if own.exists():
        return [str(own)]
    python3 = shutil.which("python3")
    if python3 is not None:
        return [python3, "-m", "pip"]
    raise Unavailable("no pip to download Django's sdist with (run `make .venv/.installed`, which makes .uv/bin/pip)")


def _download(version: str, into: Path) -> Path:
    given = os.environ.get(SDIST_ENV)
    if given:
        return Path(given)
    command = [*_pip(), "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
               "--retries", "2", "--timeout", "20", "--dest", str(into), f"django=={version}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"`pip download django=={version}` took more than 600 s") from None
    sdists = sorted(into.glob("[Dd]jango-*.tar.gz"))
    if done.returncode != 0 or not sdists:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise Unavailable(f"`pip download --no-deps --no-binary :all: django=={version}` failed (is the package "
                          f"registry reachable?):\n{tail}")
    return sdists[0]


def _extract(sdist: Path, version: str, into: Path) -> None:
    prefix = f"django-{version}/tests/cache/"  # Django-4.2.tar.gz holds Django-4.2/: compared without case
    wanted = {(prefix + name).lower(): name for name in FILES}
    found = 0
    with tarfile.open(sdist, "r:gz") as archive:
        for member in archive:
            name = wanted.get(member.name.lower())
            if name is None or not member.isfile():
                continue
            source = archive.extractfile(member)
            assert source is not None
            (into / name).write_bytes(source.read())
            found += 1
    if not (into / "tests.py").exists() or not (into / "models.py").exists():
        raise Unavailable(f"{sdist.name} has no {prefix}tests.py and models.py ({found} of the files found)")


@functools.cache
def fetch() -> Path:
    """The directory to put on sys.path (it holds the package ``cache``: Django's tests/cache/), fetched once."""
    import django

    version = django.__version__
    root = cache_root(version)
    if (root / "cache" / "tests.py").exists() and (root / "SHA256").exists():
        return root
    expected = locked_sha256s(version)
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{version}-", dir=root.parent) as tmp:
        sdist = _download(version, Path(tmp))
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if expected is not None and digest not in expected:
            raise Unavailable(f"{sdist.name}: sha256 {digest} is not one that requirements-lock.txt records for "
                              f"django {version}; refusing to run its code")
        staging = Path(tmp) / "root"
        (staging / "cache").mkdir(parents=True)
        _extract(sdist, version, staging / "cache")
        (staging / "SHA256").write_text(f"{digest}  {sdist.name}\n", encoding="utf-8")
        try:
            staging.rename(root)  # atomic: a concurrent run either finds it whole or puts its own there
        except OSError:
            if not (root / "cache" / "tests.py").exists():
                raise
    return root


@functools.cache
def problem() -> str | None:
    """None when Django's tests are available, else why not (for the failing test and the collection report)."""
    try:
        fetch()
    except (Unavailable, OSError, tarfile.TarError) as exc:
        import django

        return (f"Django's own cache tests (tests/cache/ of django-{django.__version__}.tar.gz) are not available: "
                f"{exc}\nThey are fetched once into {cache_root(django.__version__)}; offline, set {SDIST_ENV} to "
                "a copy of that sdist.")
    return None
