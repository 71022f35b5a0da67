"""A private redis-server on a free loopback port, started and stopped by its owner.

Nothing in cachewarm assumes a Redis already listening on 6379: the demo, the tests and the benchmarks start
one of these unless they are given a URL.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

_random = random.SystemRandom()  # not the module's generator: a test may seed it, forked processes share it
FIRST_PORT = 10000  # free_port's ports: from here to the start of the ephemeral range


def ephemeral_start() -> int:
    """The first port of the kernel's range for outgoing connections' local ends (Linux's default elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nothing listens on now, chosen below the ephemeral range: a port the kernel hands out
    (bind to 0) is also a candidate for the local end of any outgoing connection, so between this call and the
    server's bind a client socket could take it (seen: a cluster node's bus port taken under a busy test run)."""
    start = ephemeral_start()
    for _ in range(200 if start > FIRST_PORT + 1000 else 0):
        port = _random.randrange(FIRST_PORT, start)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServerError(RuntimeError):
    """redis-server could not be started."""


class RedisServer:
    """Runs `redis-server` in a temporary directory; `url(db)` gives a redis:// URL for one of its databases."""

    def __init__(self, *, port: int | None = None, extra_args: list[str] | None = None,
                 executable: str = "redis-server") -> None:
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])
        self.executable = executable
        self.process: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def log_path(self) -> Path:
        assert self._dir is not None
        return Path(self._dir) / "redis.log"

    def start(self, timeout: float = 10.0) -> RedisServer:
        path = shutil.which(self.executable)
        if path is None:
            raise RedisServerError(f"{self.executable} is not installed (apt-get install redis-server)")
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="cachewarm-redis-")
        args = [
            path, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", self._dir, "--logfile", str(self.log_path), "--daemonize", "no",
            "--protected-mode", "no", *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
                raise RedisServerError(f"redis-server exited with {self.process.returncode}: {log[-500:]}")
            if self._ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisServerError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()

