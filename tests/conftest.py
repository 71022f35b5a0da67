"""Shared fixtures: a private redis-server per session (flushed per test), keyspace files, clients."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from cachewarm import Cache, Settings
from cachewarm.demo.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean database 0 on the session's redis-server (the broker, when used, is database 1)."""
    client = redis.Redis.from_url(redis_server.url(0))
    client.flushall()
    client.close()
    return redis_server.url(0)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Writes a keyspace TOML file and returns its path."""

    def write(text: str) -> Path:
        path = tmp_path / "cachewarm.toml"
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def make_settings(redis_url: str) -> Callable[..., Settings]:
    def make(config: Path, **overrides: object) -> Settings:
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
