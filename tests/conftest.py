"""Shared fixtures: a private redis-server per session (flushed per test), keyspace files, clients.

The folders mirror cachewarm/'s packages (tests/read/ for cachewarm/read/, ...); tests/unit/ holds the tests that
need no server and no process of their own, marked ``unit`` here: ``pytest tests/unit`` (or ``-m unit``) runs them
in seconds. The scenarios that start whole deployments are in tests/deploy/ and tests/faults/.

Topologies: a module with ``pytestmark = topologies`` (tests/support/redis_cluster.py), or a test marked so, runs
once on the standalone redis-server and once on a private Redis Cluster (3 masters, 1 replica each), started once
per session and flushed per test. `redis_url`, `redis_client` and `make_settings` follow the `topology`; the
Celery broker stays the standalone server (`redis_server.url(1)`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from cachewarm import Cache, Settings
from cachewarm.demo.redis_server import RedisServer
from cachewarm.demo.source import SourceServer
from tests.support import keyspaces
from tests.support.recording import RecordingState
from tests.support.redis_cluster import RedisCluster, raw_client

UNIT = Path(__file__).resolve().parent / "unit"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "source(latency=0.0, items=..., recording=False): the `source` fixture's setup")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if UNIT in item.path.parents:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster.started()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def topology(request: pytest.FixtureRequest) -> str:
    """"standalone" unless the test is parametrised with `topologies`."""
    return str(getattr(request, "param", "standalone"))


@pytest.fixture
def redis_url(topology: str, request: pytest.FixtureRequest) -> str:
    """A clean cache: database 0 on the session's redis-server (the broker, when used, is database 1), or the
    session's Redis Cluster, flushed."""
    if topology == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        return cluster.url
    server: RedisServer = request.getfixturevalue("redis_server")
    client = redis.Redis.from_url(server.url(0))
    client.flushall()
    client.close()
    return server.url(0)


@pytest.fixture
def redis_client(redis_url: str, topology: str) -> Iterator[redis.Redis]:
    client = raw_client(redis_url, topology)
    yield client
    client.close()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Writes a keyspace TOML file (tmp_path/cachewarm.toml) and returns its path."""
    return functools.partial(keyspaces.write_config, tmp_path)


@pytest.fixture
def source(request: pytest.FixtureRequest) -> Iterator[SourceServer]:
    """The demo product API in this process. `@pytest.mark.source(latency=..., items=..., recording=True)` on the
    test or its module sets it up; without it: no latency."""
    marker = request.node.get_closest_marker("source")
    options = dict(marker.kwargs) if marker else {}
    recording = options.pop("recording", False)
    options.setdefault("latency", 0.0)
    server = SourceServer(**options)
    if recording:
        server.state = RecordingState(items=server.state.items, latency=options["latency"])
    with server:
        yield server


@pytest.fixture
def make_settings(redis_url: str, topology: str) -> Callable[..., Settings]:
    def make(config: Path, **overrides: object) -> Settings:
        overrides.setdefault("redis_cluster", topology == "cluster")
        return Settings.load(redis_url=redis_url, config=config, **overrides)

    return make


@pytest.fixture
def make_cache(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Cache]]:
    made: list[Cache] = []

    def make(config: Path, **overrides: object) -> Cache:
        cache = Cache(settings=make_settings(config, **overrides))
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.close()
