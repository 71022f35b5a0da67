"""A private RabbitMQ node for the tests: Debian's `rabbitmq-server` on free ports, with its own node name, data
and log directories, Erlang cookie (HOME) and epmd (ERL_EPMD_PORT), so it neither needs nor touches a system one.

Started in the background and waited for with `rabbitmqctl await_startup`; `restart()` stops and starts the same
node on the same ports and data (durable queues and persistent messages survive, as on a real restart).
`rabbitmq` is the session fixture; a machine without rabbitmq-server fails the test (the Makefile installs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachewarm.demo.redis_server import free_port

# Debian's /usr/sbin/rabbitmq-* are wrappers that `su rabbitmq` when run as root; the real scripts run as anyone.
BIN = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT = 120.0


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed (apt-get install rabbitmq-server; `make test` does)")
    return found


class RabbitMQ:
    """One rabbitmq-server node; `url` is its AMQP URL (user guest, vhost /)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cachewarm-rabbitmq-"))
        self.node = f"cw{uuid.uuid4().hex[:8]}@localhost"
        self.port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        (self.dir / "enabled_plugins").write_text("[].\n")
        self.env = {
            **os.environ, "HOME": str(self.dir), "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port), "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"), "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"), "RABBITMQ_PID_FILE": str(self.dir / "pid"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def ctl(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([_tool("rabbitmqctl"), "-n", self.node, *args], env=self.env, cwd=self.dir,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> RabbitMQ:
        out = open(self.dir / "server.log", "ab")  # noqa: SIM115 - the server holds it
        self.process = subprocess.Popen([_tool("rabbitmq-server")], env=self.env, cwd=self.dir, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with {self.process.returncode}:\n{self.log()}")
            # await_startup fails at once while the node is not registered with epmd yet, and each call boots an
            # Erlang VM (a second of CPU): ask it once the AMQP port listens, which comes last in the boot.
            if self._listening() and self._started():
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"rabbitmq-server not up within {START_TIMEOUT:g} s:\n{self.log()}")
            time.sleep(0.1)

    def _started(self) -> bool:
        try:  # rabbitmqctl is an Erlang VM of its own: on a loaded host it can outlast its own timeout
            return self.ctl("await_startup", "--timeout", "20").returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stops the node (rabbitmqctl stop, as an operator would; SIGKILL of its group if that fails)."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.ctl("stop", timeout=30)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def restart(self) -> float:
        """Stops and starts the node; returns when it accepts connections again, with the seconds it was down."""
        self.stop()
        down = time.monotonic()
        self.start()
        return time.monotonic() - down

    def log(self, tail: int = 3000) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def cleanup(self) -> None:
        self.stop()
        # The node started its own epmd on ERL_EPMD_PORT (a daemon, outside its process group).
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run([shutil.which("epmd") or "epmd", "-port", str(self.epmd_port), "-kill"],
                           capture_output=True, timeout=10, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitMQ]:
    broker = RabbitMQ()
    try:
        yield broker.start()
    finally:
        broker.cleanup()
