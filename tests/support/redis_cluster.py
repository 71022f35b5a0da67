"""A private Redis Cluster for the tests: 3 masters with 1 replica each, on free loopback ports.

Six `redis-server --cluster-enabled yes` processes (temporary directories, a short `cluster-node-timeout`), joined
by `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`; ready once every node reports
`cluster_state:ok` and covers the 16384 slots (replicas finish their first sync later, in the background: nothing
here reads from them). One cluster serves a test session (a few seconds to start); `flush()`
empties every master between tests. `client()` is a redis-py RedisCluster over it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from types import TracebackType
from typing import Any

import pytest
import redis
import redis.cluster

from cachewarm.demo.redis_server import RedisServer, RedisServerError, free_port

NODE_TIMEOUT_MS = 1000
TOPOLOGIES = ("standalone", "cluster")
# `pytestmark = topologies`: the module's tests run on both (conftest.py's `topology` fixture follows the param)
topologies = pytest.mark.parametrize("topology", TOPOLOGIES, indirect=True)


def raw_client(url: str, topology: str, **options: Any) -> redis.Redis:
    """A plain client of the cache of this topology (a RedisCluster, behind Redis's interface, for a cluster)."""
    if topology == "cluster":
        return redis.cluster.RedisCluster.from_url(url, **options)  # type: ignore[return-value]
    return redis.Redis.from_url(url, **options)


class RedisCluster:
    """Starts, flushes and stops the six nodes; `url` names one of them (a client discovers the rest)."""

    def __init__(self, *, masters: int = 3, replicas: int = 1, node_timeout_ms: int = NODE_TIMEOUT_MS) -> None:
        self._count = masters * (replicas + 1)
        self._node_timeout_ms = node_timeout_ms
        self.nodes = self._new_nodes()
        self.replicas = replicas

    def _new_nodes(self) -> list[RedisServer]:
        # The bus port is given (port + 10000, Redis's default, may be taken or above 65535).
        return [RedisServer(extra_args=["--cluster-enabled", "yes", "--cluster-node-timeout",
                                        str(self._node_timeout_ms), "--cluster-config-file", "nodes.conf",
                                        "--cluster-port", str(free_port()), "--repl-diskless-sync-delay", "0"])
                for _ in range(self._count)]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self, timeout: float = 30.0) -> RedisCluster:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RedisServerError("redis-cli is not installed (apt-get install redis-tools)")
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            done = subprocess.run([cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas),
                                   "--cluster-yes"], capture_output=True, timeout=timeout, check=False)
            if done.returncode != 0:
                raise RedisServerError(f"redis-cli --cluster create failed: {done.stdout[-800:]!r}")
            self._wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def start_retrying(self, attempts: int = 3) -> RedisCluster:
        """Starts the cluster; on a loaded machine a start can fail (a port taken meanwhile, a slow join): the
        nodes are stopped and a new set, on new ports, started, `attempts` times at most."""
        for attempt in range(attempts):
            try:
                return self.start()
            except (RedisServerError, subprocess.TimeoutExpired, redis.RedisError):
                if attempt + 1 == attempts:
                    raise
                self.nodes = self._new_nodes()
        raise AssertionError("unreachable")

    @classmethod
    def started(cls, attempts: int = 3) -> RedisCluster:
        """A started cluster (see `start_retrying`)."""
        return cls().start_retrying(attempts)

    def _wait_ok(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._node_ok(node) for node in self.nodes):
                return
            time.sleep(0.1)
        raise RedisServerError(f"the cluster did not reach cluster_state:ok within {timeout}s")

    @staticmethod
    def _node_ok(node: RedisServer) -> bool:
        client = redis.Redis(port=node.port, socket_timeout=2)
        try:
            info = client.cluster("info")
            slots = client.cluster("slots")
        except redis.RedisError:
            return False
        finally:
            client.close()
        state = info.get("cluster_state") if isinstance(info, dict) else None
        covered = sum(int(s[1]) - int(s[0]) + 1 for s in slots) if isinstance(slots, list) else 0
        return bool(state == "ok" and covered == 16384)

    def client(self, **kwargs: object) -> redis.cluster.RedisCluster:
        return redis.cluster.RedisCluster.from_url(self.url, **kwargs)  # type: ignore[arg-type]

    def flush(self) -> None:
        """Empties every master (FLUSHALL); replicas follow."""
        for node in self.nodes:
            client = redis.Redis(port=node.port, socket_timeout=5)
            try:
                if client.info("replication").get("role") == "master":
                    client.flushall()
            finally:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.cleanup()

    def __enter__(self) -> RedisCluster:
        return self.start_retrying()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

