"""Several worker "hosts" on one machine: each a `celery worker` process group of its own (main process, pool
children, sidecar) with its own Celery node name (``-n NAME@%h``), heartbeats and metrics port, on one broker
and one cache. What a deployment on several machines runs, minus the machines (docs/OPERATIONS.md)."""

from __future__ import annotations

import re
import signal
import sys
import time
from dataclasses import dataclass, field
from subprocess import Popen

import httpx
import redis

from cachewarm.demo.redis_server import free_port
from cachewarm.redis_layer.keys import KeyLayout
from cachewarm.warming.heartbeat import Heartbeat, read_heartbeats
from tests.support.processes import Processes
from tests.support.waiting import wait_until

L = KeyLayout()


@dataclass
class Host:
    """One worker node; `start()` again after a stop or kill gives the same name and metrics port."""

    procs: Processes
    name: str
    concurrency: int = 2
    metrics_port: int = field(default_factory=free_port)
    proc: Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_name(self) -> str:
        return f"{self.name}.{self.starts}.log"

    def start(self) -> Host:
        self.starts += 1
        env = {**self.procs.env, "CACHEWARM_METRICS_PORT": str(self.metrics_port)}
        self.proc = self.procs.spawn(
            sys.executable, "-m", "celery", "-A", "cachewarm.worker", "worker", "--loglevel", "INFO",
            "--pool", "prefork", "--concurrency", str(self.concurrency), "-n", f"{self.name}@%h",
            "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle", "--without-heartbeat",
            log=self.log_name, env=env)
        return self

    def beats(self, client: redis.Redis) -> list[Heartbeat]:
        return [b for b in read_heartbeats(client, L) if b.node.startswith(self.name + "@")]

    def wait_ready(self, timeout: float = 40.0) -> None:
        """Until the node consumes its queues (Celery's "NAME@HOST ready." line; its sidecar may still be
        starting: it beats for the node a few seconds later)."""
        wait_until(lambda: re.search(rf"{self.name}@\S+ ready\.", self.procs.log(self.log_name)), timeout,
                   f"host {self.name} up", details=lambda: self.procs.log(self.log_name)[-3000:], interval=0.1)

    def wait_metrics(self, timeout: float = 40.0) -> None:
        """Until the node's metrics endpoint (its sidecar's) answers."""
        wait_until(lambda: self.refreshes() is not None, timeout, f"the metrics endpoint of {self.name}",
                   ignore=(httpx.HTTPError,), interval=0.2)

    def stop(self) -> float:
        """A warm shutdown (SIGTERM to the group, as systemd or `celery multi stop` does); seconds it took."""
        assert self.proc is not None
        started = time.monotonic()
        self.procs.kill(self.proc, signal.SIGTERM)
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL of the whole host: main process, pool children and sidecar at once."""
        assert self.proc is not None
        self.procs.kill(self.proc, signal.SIGKILL)

    def refreshes(self) -> dict[str, float]:
        """This host's own `cachewarm_refreshes_total` per keyspace (all outcomes), from its metrics endpoint."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        totals: dict[str, float] = {}
        for match in re.finditer(r'^cachewarm_refreshes_total\{([^}]*)\} (\S+)$', text, re.M):
            keyspace = re.search(r'keyspace="([^"]*)"', match.group(1))
            if keyspace:
                totals[keyspace.group(1)] = totals.get(keyspace.group(1), 0.0) + float(match.group(2))
        return totals
