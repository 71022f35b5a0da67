"""A private Redis Sentinel group: one master, one replica and three `redis-sentinel`s (quorum 2), on free ports.

Three sentinels rather than one with quorum 1: a failover needs a majority of the sentinels to elect a leader, and
three is the smallest group in which losing one machine leaves that majority, so the tests run what production
runs; they cost a few milliseconds to start. `down-after-milliseconds` is 1000 so that a killed master is
replaced within a few seconds.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from cachewarm.demo.redis_server import RedisServer, free_port
from tests.support.waiting import wait_until

MASTER = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class SentinelGroup:
    def __init__(self, *, sentinels: int = 3, quorum: int = 2) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cachewarm-sentinel-"))
        self.count, self.quorum = sentinels, quorum
        self.master = RedisServer()
        self.replica: RedisServer | None = None
        self.ports: list[int] = []
        self.sentinels: list[subprocess.Popen[bytes]] = []

    def url(self, db: int = 0) -> str:
        """The cache's URL: ``redis+sentinel://`` over every sentinel."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"redis+sentinel://{hosts}/{MASTER}/{db}"

    def celery_url(self, db: int = 0) -> str:
        """The broker's URL in Celery's form (with CACHEWARM_BROKER_SENTINEL_MASTER=MASTER)."""
        return ";".join(f"sentinel://127.0.0.1:{port}/{db}" for port in self.ports)

    def start(self) -> SentinelGroup:
        self.master.start()
        self.replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", str(self.master.port)]).start()
        for _ in range(self.count):
            port = free_port()
            conf = self.dir / f"sentinel-{port}.conf"  # sentinel rewrites its file: one each
            conf.write_text("\n".join([
                f"port {port}", "bind 127.0.0.1", "daemonize no", f"dir {self.dir}",
                f"logfile {self.dir / f'sentinel-{port}.log'}",
                f"sentinel monitor {MASTER} 127.0.0.1 {self.master.port} {self.quorum}",
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {MASTER} 1", ""]))
            self.sentinels.append(subprocess.Popen([shutil.which("redis-sentinel") or "redis-sentinel", str(conf)],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                   start_new_session=True))
            self.ports.append(port)
        for port in self.ports:
            client = redis.Redis(port=port, decode_responses=True)
            wait_until(lambda c=client: c.sentinel_master(MASTER), 10,  # type: ignore[no-untyped-call]
                       f"sentinel {port} up", ignore=(redis.RedisError,))
            client.close()
        return self

    def wait_ready(self) -> None:
        """Until a failover can happen: the replica in sync, and each sentinel knowing the replica and the others
        (they find each other through hello messages every 2 s: `kill_master` waits here, while the test's
        workers start)."""
        assert self.replica is not None
        replica = redis.Redis(port=self.replica.port)
        wait_until(lambda: replica.info("replication").get("master_link_status") == "up", 20, "the replica in sync",
                   ignore=(redis.RedisError,))
        replica.close()
        for port in self.ports:
            client = redis.Redis(port=port, decode_responses=True)
            wait_until(lambda c=client: len(c.sentinel_slaves(MASTER)) == 1 and  # type: ignore[no-untyped-call]
                       len(c.sentinel_sentinels(MASTER)) == self.count - 1,  # type: ignore[no-untyped-call]
                       30, f"sentinel {port} to see the group", ignore=(redis.RedisError,), details=self.logs,
                       interval=0.1)
            client.close()

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers says."""
        for port in self.ports:
            client = redis.Redis(port=port, socket_timeout=1)
            try:
                address = client.sentinel_get_master_addr_by_name(MASTER)  # type: ignore[no-untyped-call]
                return int(address[1]) if address else None
            except redis.RedisError:
                continue
            finally:
                client.close()
        return None

    def kill_master(self) -> int:
        """SIGKILL of the master, once the group can fail over; returns its port."""
        self.wait_ready()
        assert self.master.process is not None
        port = self.master.port
        self.master.process.send_signal(signal.SIGKILL)
        self.master.process.wait(5)
        return port

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> float:
        """Until the sentinels name a new master that answers as one; returns the time.monotonic() of that."""
        def promoted() -> bool:
            port = self.master_port()
            if port is None or port == old_port:
                return False
            client = redis.Redis(port=port, socket_timeout=1)
            try:
                return client.info("replication").get("role") == "master"
            finally:
                client.close()

        wait_until(promoted, timeout, "the sentinels' failover", ignore=(redis.RedisError,), details=self.logs,
                   interval=0.05)
        return time.monotonic()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                         for p in sorted(self.dir.glob("sentinel-*.log")))

    def cleanup(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        for server in (self.master, self.replica):
            if server is not None:
                server.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SentinelGroup:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *_: object) -> None:
        self.cleanup()
