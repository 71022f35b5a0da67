"""Script calls on a Redis Cluster (issue 10 item 6's causes): a pipelined call goes straight to its slot's master
(no COMMAND GETKEYS round trip), a fresh cluster loads each script once per master instead of resending every call
as EVAL of its source, and a slot that moved (MOVED) or a script a node lost still runs every call once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.cluster

from cachewarm.redis_layer import script_calls, scripts
from cachewarm.redis_layer.keys import KeyLayout
from tests.support.redis_cluster import RedisCluster

pytestmark = pytest.mark.timeout(60)

LAYOUT = KeyLayout("cw")
ClusterAndMasters = tuple[Any, list[redis.Redis]]  # a RedisCluster, typed loosely (redis-py's stubs)


def masters(cluster: RedisCluster) -> list[redis.Redis]:
    found = []
    for node in cluster.nodes:
        client = redis.Redis(port=node.port, socket_timeout=5)
        if client.info("replication").get("role") == "master":
            found.append(client)
        else:
            client.close()
    return found


def calls_of(nodes: list[redis.Redis]) -> dict[str, int]:
    """INFO commandstats calls summed over the nodes, by command (`command|getkeys`, `evalsha`, ...)."""
    total: dict[str, int] = {}
    for node in nodes:
        for name, stat in node.info("commandstats").items():
            command = name.removeprefix("cmdstat_")
            total[command] = total.get(command, 0) + int(stat["calls"])
    return total


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> Iterator[ClusterAndMasters]:
    redis_cluster.flush()
    client = redis_cluster.client(socket_timeout=5)
    nodes = masters(redis_cluster)
    yield client, nodes
    client.close()
    for node in nodes:
        node.close()


def invalidations(n: int) -> list[scripts.Call[script_calls.Invalidated]]:
    return [script_calls.invalidate_key(LAYOUT, key=f"item:{i}", version=i + 1, fence_ttl=60) for i in range(n)]


def test_a_pipelined_call_asks_the_server_nothing(
        cluster: ClusterAndMasters) -> None:
    client, nodes = cluster
    scripts.execute(client, invalidations(3))  # the script loaded on every master
    for node in nodes:
        node.config_resetstat()
    replies = scripts.execute(client, invalidations(60))
    assert all(isinstance(r, script_calls.Invalidated) for r in replies)
    counted = calls_of(nodes)
    assert counted.get("command|getkeys", 0) == 0
    assert counted.get("evalsha", 0) == 60
    assert {int(client.hget(LAYOUT.fence(f"item:{i}"), "v") or 0) for i in (0, 59)} == {1, 60}


async def test_the_async_pipeline_neither(redis_cluster: RedisCluster,
                                          cluster: ClusterAndMasters) -> None:
    _, nodes = cluster
    client = redis.asyncio.cluster.RedisCluster.from_url(redis_cluster.url, socket_timeout=5)
    try:
        await scripts.aexecute(client, invalidations(3))  # type: ignore[arg-type]
        for node in nodes:
            node.config_resetstat()
        await scripts.aexecute(client, invalidations(60))  # type: ignore[arg-type]
    finally:
        await client.aclose()
    counted = calls_of(nodes)
    assert counted.get("command|getkeys", 0) == 0
    assert counted.get("evalsha", 0) == 60


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_a_fresh_cluster_loads_each_script_once_per_master(
        flavour: str, redis_cluster: RedisCluster, cluster: ClusterAndMasters) -> None:
    """A client's first big pipeline of a script loads it first (no call fails); a script the masters lost later
    (a restart, a failover, SCRIPT FLUSH) fails each call once, is loaded once per master, and each call is sent
    again as EVALSHA: never as EVAL of the whole source."""
    client, nodes = cluster
    aclient = redis.asyncio.cluster.RedisCluster.from_url(redis_cluster.url, socket_timeout=5)

    async def send(calls: list[scripts.Call[script_calls.Invalidated]]) -> list[Any]:
        if flavour == "sync":
            return scripts.execute(client, calls)
        return await scripts.aexecute(aclient, calls)  # type: ignore[arg-type]

    try:
        for node in nodes:
            node.script_flush()
            node.config_resetstat()
        replies = await send(invalidations(60))
        counted = calls_of(nodes)
        assert counted.get("evalsha", 0) == 60 and counted.get("eval", 0) == 0
        assert counted.get("script|load", 0) == len(nodes)   # once per master, before the pipeline
        for node in nodes:
            node.script_flush()
            node.config_resetstat()
        replies = await send(invalidations(60))
        counted = calls_of(nodes)
        assert counted.get("eval", 0) == 0                   # no call resent as its whole source
        assert counted.get("script|load", 0) == len(nodes)   # one load of the one script per master
        assert counted.get("evalsha", 0) == 120              # each call: NOSCRIPT once, then run once
    finally:
        await aclient.aclose()
    assert all(isinstance(r, script_calls.Invalidated) for r in replies)
    assert int(client.hget(LAYOUT.fence("item:7"), "v") or 0) == 8


def _node_id(node: Any) -> str:
    return str(node.execute_command("CLUSTER", "MYID")).removeprefix("b'").removesuffix("'")


def test_a_moved_slot_is_followed(cluster: ClusterAndMasters) -> None:
    """The client's slot table goes stale (an empty slot handed to another master behind its back): the call
    routed to the old owner gets MOVED and redis-py sends it again to the new one; every call runs once."""
    client, nodes = cluster
    scripts.execute(client, invalidations(3))
    key = "item:moved"
    slot = client.keyslot(LAYOUT.fence(key))
    owner = client.nodes_manager.get_node_from_slot(slot)
    old: Any = next(n for n in nodes if n.connection_pool.connection_kwargs["port"] == owner.port)
    new: Any = next(n for n in nodes if n is not old)
    new_id, old_id = _node_id(new), _node_id(old)
    try:
        for node in (new, old):  # the slot is empty (flushed): it can be handed over without MIGRATE
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", new_id)
        for node in nodes:
            node.config_resetstat()
        call = script_calls.invalidate_key(LAYOUT, key=key, version=5, fence_ttl=60)
        replies = scripts.execute(client, [call, *invalidations(10)])
        assert all(isinstance(r, script_calls.Invalidated) for r in replies), replies
        assert new.hget(LAYOUT.fence(key), "v") == b"5"
        assert calls_of([old]).get("evalsha", 0) >= 1          # it did go to the old owner first
        assert client.nodes_manager.get_node_from_slot(slot).port == new.connection_pool.connection_kwargs["port"]
    finally:
        new.delete(LAYOUT.fence(key), LAYOUT.value(key))
        for node in (old, new):
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", old_id)


def test_stream_reads_keys_are_read_from_their_streams_argument() -> None:
    from cachewarm.redis_layer.connections import stream_keys
    assert stream_keys(("XREAD", "COUNT", 1, "BLOCK", 10, "STREAMS", "a", "b", "0", "$")) == ["a", "b"]
    assert stream_keys(("XREADGROUP", "GROUP", "streams", "STREAMS", "STREAMS", "s", ">")) == ["s"]
    assert stream_keys(("GET", "k")) is None
    assert stream_keys(("XREAD", "STREAMS", "a", "b", "c")) is None  # malformed: left to redis-py


def test_a_consumer_wake_up_asks_the_server_nothing(redis_cluster: RedisCluster, cluster: ClusterAndMasters) -> None:
    from cachewarm.redis_layer.connections import sync_client
    _, nodes = cluster
    client: Any = sync_client(redis_cluster.url, timeout=5, cluster=True)
    try:
        client.xadd("s{x}", {"a": 1})
        client.xgroup_create("s{x}", "g", id="0")
        for node in nodes:
            node.config_resetstat()
        pipe = client.pipeline(transaction=False)
        pipe.xack("s{x}", "g", "1-0")
        pipe.xread({"s{x}": "0"}, count=1, block=10)
        assert pipe.execute()[1]
        assert client.xreadgroup("g", "c", {"s{x}": ">"}, count=1)
    finally:
        client.close()
    counted = calls_of(nodes)
    assert counted.get("command|getkeys", 0) == 0 and counted.get("xread", 0) == 1
