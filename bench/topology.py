"""The benches' cache servers on either topology, and the side-by-side table of a `--topology both` run.

standalone: one private redis-server, the cache in db 0 and the Celery broker in db 1 (as the benches always did).
cluster: a private Redis Cluster of 3 masters with 1 replica each (tests/support/redis_cluster.py's, the one the
test suite runs on) as the cache, with `CACHEWARM_REDIS_CLUSTER=true`, and a standalone redis-server as the broker
(Celery cannot use a cluster as its broker). Every process of both is a child of the bench, stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from bench.common import print_table
from cachewarm.demo.redis_server import RedisServer
from cachewarm.settings import Settings
from tests.support.redis_cluster import RedisCluster  # the checkout's root is on the path (as for `bench`)

TOPOLOGIES = ("standalone", "cluster")


def add_topology_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topology", choices=[*TOPOLOGIES, "both"], default="standalone",
                        help="the cache: one redis-server (default), a private 3-master Redis Cluster, or both one "
                             "after the other, printed side by side")


def topologies_of(args: argparse.Namespace) -> list[str]:
    return list(TOPOLOGIES) if args.topology == "both" else [args.topology]


@dataclass
class CacheServers:
    """Where a bench's cache and broker live on one topology, and clients of the cache of the right kind."""

    topology: str
    redis_url: str
    broker_url: str
    nodes: list[RedisServer] = field(default_factory=list)  # the cache's redis-server processes
    broker: RedisServer | None = None  # the cluster's standalone broker (standalone: the cache's server, db 1)

    @property
    def cluster(self) -> bool:
        return self.topology == "cluster"

    def client(self, **options: Any) -> redis.Redis:
        """A plain client of the cache (a RedisCluster, behind Redis's interface, on a cluster)."""
        if self.cluster:
            return redis.cluster.RedisCluster.from_url(self.redis_url, **options)  # type: ignore[return-value]
        return redis.Redis.from_url(self.redis_url, **options)

    def async_client(self, **options: Any) -> redis.asyncio.Redis:
        if self.cluster:
            return redis.asyncio.cluster.RedisCluster.from_url(self.redis_url, **options)  # type: ignore[return-value]
        return redis.asyncio.Redis.from_url(self.redis_url, **options)

    def master_urls(self) -> list[str]:
        """The cache's masters (one URL standalone): keyspace notifications and INFO are per node."""
        if not self.cluster:
            return [self.redis_url]
        urls = []
        for node in self.nodes:
            client = redis.Redis(port=node.port, socket_timeout=5)
            try:
                if client.info("replication").get("role") == "master":
                    urls.append(node.url(0))
            except redis.RedisError:
                continue
            finally:
                client.close()
        return urls

    def settings(self, **overrides: Any) -> Settings:
        return Settings.load(redis_url=self.redis_url, broker_url=self.broker_url, redis_cluster=self.cluster,
                             **overrides)

    def env(self) -> dict[str, str]:
        """The environment of a worker or consumer process of this topology."""
        return {"CACHEWARM_REDIS_URL": self.redis_url, "CACHEWARM_BROKER_URL": self.broker_url,
                "CACHEWARM_REDIS_CLUSTER": "true" if self.cluster else "false"}

    def flush(self) -> None:
        """Empties the cache (every master) and the broker."""
        for url in self.master_urls():
            with contextlib.closing(redis.Redis.from_url(url)) as client:
                client.flushdb()
        with contextlib.closing(redis.Redis.from_url(self.broker_url)) as broker:
            broker.flushdb()


@contextlib.contextmanager
def cache_servers(topology: str) -> Iterator[CacheServers]:
    if topology == "standalone":
        with RedisServer() as server:
            yield CacheServers(topology, server.url(0), server.url(1), [server])
        return
    if topology != "cluster":
        raise ValueError(f"unknown topology {topology!r}")
    cluster = RedisCluster.started()
    try:
        with RedisServer() as broker:
            yield CacheServers(topology, cluster.url, broker.url(0), cluster.nodes, broker)
    finally:
        cluster.stop()


@dataclass(frozen=True)
class Figure:
    """One headline figure of a bench, compared across topologies: cluster / standalone against `goal`
    (a ratio; `higher` says whether the figure is better high, as a rate, or low, as a latency)."""

    name: str
    goal: float | None = None
    higher: bool = False


def side_by_side(title: str, figures: Sequence[Figure], values: dict[str, dict[str, float]],
                 notes: Sequence[str] = ()) -> str:
    """Prints (and returns as markdown) one row per figure: standalone, cluster, their ratio, the goal, met?"""
    rows = []
    for figure in figures:
        alone, clustered = values.get("standalone", {}).get(figure.name), values.get("cluster", {}).get(figure.name)
        ratio = clustered / alone if alone and clustered is not None else float("nan")
        if figure.goal is None or ratio != ratio:
            goal, met = "-", "-"
        else:
            goal = f"{'>=' if figure.higher else '<='} {figure.goal:g}x"
            met = "Y" if (ratio >= figure.goal if figure.higher else ratio <= figure.goal) else "n"
        rows.append([figure.name, _number(alone), _number(clustered),
                     "-" if ratio != ratio else f"{ratio:.2f}x", goal, met])
    return print_table(title, ["figure", "standalone", "cluster", "cluster/standalone", "goal", "met"], rows,
                       notes=notes)


def _number(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    if abs(value) < 10:
        return f"{value:.3f}"
    return f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cores)"
