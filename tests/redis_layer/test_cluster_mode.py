"""Cluster mode itself (issue 10 item 1): the flag selects RedisCluster; a cluster node reached without it fails at
once with one line naming CACHEWARM_REDIS_CLUSTER; a standalone server with the flag is refused too; the read path
on a cluster is the one GET."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio.cluster
import redis.cluster

from cachewarm import AsyncCache, Cache, ConfigError, Settings, publish_invalidation
from cachewarm.demo.redis_server import RedisServer
from tests.support.redis_cluster import RedisCluster

pytestmark = pytest.mark.timeout(60)

CONFIG = """
[keyspaces.item]
pattern = "item:{id}"
source = "python:tests.support.sources_fixture:counted"
ttl = 60
tags = ["items"]
"""


def test_the_flag_selects_the_cluster_clients(redis_cluster: RedisCluster,
                                              write_config: Callable[[str], Path]) -> None:
    redis_cluster.flush()
    settings = Settings.load(redis_url=redis_cluster.url, redis_cluster=True, config=write_config(CONFIG))
    with Cache(settings=settings) as cache:
        assert isinstance(cache.redis, redis.cluster.RedisCluster)
        assert cache.get("item:1")["id"] == "1"
        assert cache.lookup("item:1").hit
        assert cache.invalidate_tag("items") == 1
        assert not cache.exists("item:1")
        for i in range(20):  # on every node
            cache.set(f"item:{i}", {"i": i})
        assert cache.clear("item:1") == 11   # SCAN of every node: item:1, item:10..19
        assert cache.exists("item:2") and not cache.exists("item:12")
        publish_invalidation("item:1", settings=settings)


async def test_the_async_client_too(redis_cluster: RedisCluster, write_config: Callable[[str], Path]) -> None:
    redis_cluster.flush()
    settings = Settings.load(redis_url=redis_cluster.url, redis_cluster=True, config=write_config(CONFIG))
    async with AsyncCache(settings=settings) as cache:
        assert isinstance(cache.redis, redis.asyncio.cluster.RedisCluster)
        assert (await cache.get("item:2"))["id"] == "2"
        assert (await cache.lookup("item:2")).hit


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_cluster_node_without_the_flag_fails_at_once_naming_it(
        flavour: str, redis_cluster: RedisCluster, write_config: Callable[[str], Path]) -> None:
    settings = Settings.load(redis_url=redis_cluster.url, config=write_config(CONFIG))
    with pytest.raises(ConfigError) as raised:
        if flavour == "sync":
            with Cache(settings=settings) as cache:
                cache.get("item:1")
        else:
            import asyncio

            async def read() -> None:
                async with AsyncCache(settings=settings) as cache:
                    await cache.get("item:1")
            asyncio.run(read())
    message = str(raised.value)
    assert "CACHEWARM_REDIS_CLUSTER" in message and "\n" not in message


def test_the_cli_says_it_in_one_line(redis_cluster: RedisCluster, write_config: Callable[[str], Path],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from cachewarm.cli import cli
    monkeypatch.setenv("CACHEWARM_REDIS_URL", redis_cluster.url)
    monkeypatch.setenv("CACHEWARM_CONFIG", str(write_config(CONFIG)))
    monkeypatch.delenv("CACHEWARM_REDIS_CLUSTER", raising=False)
    result = CliRunner().invoke(cli, ["invalidate", "item:1"])
    assert result.exit_code == 2, result.output
    assert "CACHEWARM_REDIS_CLUSTER" in result.output and "Traceback" not in result.output


def test_the_flag_on_a_standalone_server_is_refused(redis_server: RedisServer,
                                                    write_config: Callable[[str], Path]) -> None:
    settings = Settings.load(redis_url=redis_server.url(0), redis_cluster=True, config=write_config(CONFIG))
    with pytest.raises((redis.RedisError, ConfigError)):
        Cache(settings=settings).get("item:1")
