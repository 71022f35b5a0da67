"""A private PostgreSQL cluster for tests and benchmarks: initdb + postgres on a free loopback port, in a temporary
directory (the unix socket too), run as a non-root user because PostgreSQL refuses to run as root.

`shared_postgres()` starts one per test process, on first use, and stops it when the process exits, so the test
modules that need one share it (a session fixture imported into several modules would start one each).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

from cachewarm.demo.redis_server import free_port

SUPERUSER = "postgres"
# Fast settings for tests (nothing here must survive a crash of the machine); the latency bench passes its own.
TEST_OPTIONS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class PostgresError(RuntimeError):
    """PostgreSQL could not be started."""


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        raise PostgresError("PostgreSQL is not installed (apt-get install postgresql)")
    return Path(found[-1]).parent


def _run_as() -> list[str]:
    """The prefix that runs a command as an unprivileged user (nothing when we are not root)."""
    if os.geteuid() != 0:
        return []
    user = pwd.getpwnam("nobody")
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]


class PostgresServer:
    """One private cluster; `url()` is a SQLAlchemy-style URL of a database in it (`create_database()` makes more)."""

    def __init__(self, *, options: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.options = dict(TEST_OPTIONS if options is None else options)
        self.process: subprocess.Popen[bytes] | None = None
        self.dir: Path | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> PostgresServer:
        bin_dir = _bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="cachewarm-pg-"))
        data, log = self.dir / "data", self.dir / "postgres.log"
        prefix = _run_as()
        if prefix:
            user = pwd.getpwnam("nobody")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        os.chmod(self.dir, 0o700)
        init = subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust",
                               "-E", "UTF8", "--no-sync"], capture_output=True, cwd=self.dir)
        if init.returncode != 0:
            raise PostgresError(f"initdb failed: {init.stderr.decode(errors='replace')[-500:]}")
        args = [*prefix, str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.dir),
                "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]
        for name, value in self.options.items():
            args += ["-c", f"{name}={value}"]
        with open(log, "ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=self.dir,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PostgresError(f"postgres exited with {self.process.returncode}: {log.read_text()[-500:]}")
            if subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                              capture_output=True).returncode == 0:
                return self
            time.sleep(0.05)
        self.stop()
        raise PostgresError(f"postgres did not answer on port {self.port} within {timeout}s")

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL (each test gets its own, so nothing leaks between tests)."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        return self.url(name)

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown: disconnects clients, no checkpoint wait
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


_shared: PostgresServer | None = None


def shared_postgres() -> PostgresServer:
    """This process's test cluster, started on first use and stopped at exit."""
    global _shared
    if _shared is None:
        _shared = PostgresServer().start()
        atexit.register(_shared.stop)
    return _shared
