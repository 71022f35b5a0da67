"""Script calls of many keys on a Redis Cluster, one per node (redis_layer/node_calls.py, issue 29): the scan's
claims and the refresh pipeline's LEASEs run as one call per master, a call routed to a node that lacks one of its
keys does nothing and says so, and a slot moved behind the client's back still gets every key done once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.cluster

from cachewarm.redis_layer import node_calls, script_calls, scripts
from cachewarm.redis_layer.connections import async_client
from cachewarm.redis_layer.keys import KeyLayout
from cachewarm.redis_layer.script_calls import LeaseStatus
from cachewarm.warming.claims import chunked
from cachewarm.warming.pipeline import Pipeliner
from tests.support.redis_cluster import RedisCluster

pytestmark = pytest.mark.timeout(60)

LAYOUT = KeyLayout("cw")
KEYS = [f"item:{i}" for i in range(300)]


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> Iterator[tuple[Any, list[redis.Redis]]]:
    redis_cluster.flush()
    client: Any = redis_cluster.client()
    nodes = []
    for node in redis_cluster.nodes:
        plain = redis.Redis(port=node.port, socket_timeout=5)
        if plain.info("replication").get("role") == "master":
            nodes.append(plain)
        else:
            plain.close()
    try:
        yield client, nodes
    finally:
        client.close()
        for plain in nodes:
            plain.close()


def _calls(nodes: list[redis.Redis], command: str) -> int:
    return sum(int(n.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)) for n in nodes)


def _claim(keys: list[str]) -> scripts.Call[list[str]]:
    return script_calls.claim(LAYOUT, keys=keys, claim_ms=60_000)


def _node_id(node: redis.Redis) -> str:
    raw = node.execute_command("CLUSTER", "MYID")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def test_claims_of_keys_of_many_slots_are_one_call_per_node(cluster: tuple[Any, list[redis.Redis]]) -> None:
    client, nodes = cluster
    list(chunked(client, [f"warm:{i}" for i in range(30)], _claim, 1, LAYOUT.claim))  # loaded on every master
    for node in nodes:
        node.config_resetstat()
    taken = [key for reply in chunked(client, KEYS, _claim, 1, LAYOUT.claim) for key in reply]
    assert sorted(taken) == sorted(KEYS)
    assert _calls(nodes, "evalsha") + _calls(nodes, "eval") == len(nodes)
    assert all(client.exists(LAYOUT.claim(key)) for key in KEYS[:20])
    assert list(chunked(client, KEYS, _claim, 1, LAYOUT.claim)) == [[]] * len(nodes)  # taken once: none again


def test_a_node_call_with_a_key_of_another_node_does_nothing(cluster: tuple[Any, list[redis.Redis]]) -> None:
    client, _ = cluster
    groups = node_calls.by_node(client, [LAYOUT.claim(key) for key in KEYS])
    first, second = (KEYS[indexes[0]] for indexes in list(groups.values())[:2])
    reply = scripts.execute(client, [node_calls.on_node(_claim([first, second]), 1)])[0]
    assert node_calls.not_here(reply), reply
    assert not client.exists(LAYOUT.claim(first)) and not client.exists(LAYOUT.claim(second))


class MovedSlot:
    """One key's slot handed to another master behind the client's back (the slot is empty: no MIGRATE)."""

    def __init__(self, client: Any, nodes: list[redis.Redis], name: str) -> None:
        self.slot = client.keyslot(name)
        owner = client.nodes_manager.get_node_from_slot(self.slot)
        self.old = next(n for n in nodes if n.connection_pool.connection_kwargs["port"] == owner.port)
        self.new = next(n for n in nodes if n is not self.old)

    def __enter__(self) -> MovedSlot:
        new_id = _node_id(self.new)
        for node in (self.new, self.old):
            node.execute_command("CLUSTER", "SETSLOT", self.slot, "NODE", new_id)
        return self

    def __exit__(self, *exc: object) -> None:
        old_id = _node_id(self.old)
        self.new.flushall()
        for node in (self.old, self.new):
            node.execute_command("CLUSTER", "SETSLOT", self.slot, "NODE", old_id)


def test_the_scan_claims_every_key_once_when_a_slot_moved(cluster: tuple[Any, list[redis.Redis]]) -> None:
    client, nodes = cluster
    list(chunked(client, KEYS[:1], _claim, 1, LAYOUT.claim))  # the client's slot map is read before the slot moves
    client.delete(LAYOUT.claim(KEYS[0]))
    with MovedSlot(client, nodes, LAYOUT.claim(KEYS[0])) as moved:
        taken = [key for reply in chunked(client, KEYS, _claim, 1, LAYOUT.claim) for key in reply]
        assert sorted(taken) == sorted(KEYS)  # the old owner's call did nothing and its keys went one by one
        assert moved.new.exists(LAYOUT.claim(KEYS[0]))


async def _leases(url: str, keys: list[str]) -> list[script_calls.Leased]:
    client = async_client(url, timeout=5, cluster=True)
    try:
        pipeliner = Pipeliner(client)

        def build(items: list[Any]) -> scripts.Call[list[Any]]:
            return script_calls.lease_many(LAYOUT, items, lease_ms=60_000, ahead_ms=None)

        return list(await asyncio.gather(*(pipeliner.merged("lease", build, (key, f"t-{key}")) for key in keys)))
    finally:
        await client.aclose()


async def test_the_refresh_leases_once_per_node_and_once_each_when_a_slot_moved(
        redis_cluster: RedisCluster, cluster: tuple[Any, list[redis.Redis]]) -> None:
    client, nodes = cluster
    await _leases(redis_cluster.url, [f"warm:{i}" for i in range(30)])  # loaded on every master
    for node in nodes:
        node.config_resetstat()
    leased = await _leases(redis_cluster.url, KEYS[:100])
    assert [r.status for r in leased] == [LeaseStatus.TAKEN] * 100
    assert _calls(nodes, "evalsha") + _calls(nodes, "eval") == len(nodes)
    with MovedSlot(client, nodes, LAYOUT.value(KEYS[150])):
        leased = await _leases(redis_cluster.url, KEYS[100:200])
    # none HELD: a node's call that met the moved key ran nothing before its keys were sent one by one
    assert [r.status for r in leased] == [LeaseStatus.TAKEN] * 100


def test_a_batch_of_key_events_is_one_call_per_node_and_applied_when_a_slot_moved(
        cluster: tuple[Any, list[redis.Redis]]) -> None:
    from cachewarm.invalidation.apply import apply_events
    from cachewarm.invalidation.events import Event
    from cachewarm.outcomes import InvalidationOutcome

    client, nodes = cluster
    for key in KEYS[:100]:
        client.set(LAYOUT.value(key), "x")
    apply_events(client, [Event(f"1-{i}", "key", f"warm:{i}", version=1) for i in range(30)], layout=LAYOUT,
                 fence_ttl=60)  # the script loaded on every master
    for node in nodes:
        node.config_resetstat()
    events = [Event(f"2-{i}", "key", key, version=5) for i, key in enumerate(KEYS[:100])]
    applied = apply_events(client, events, layout=LAYOUT, fence_ttl=60)
    assert set(applied.outcomes.values()) == {InvalidationOutcome.APPLIED}
    assert applied.keys == KEYS[:100]
    assert _calls(nodes, "evalsha") + _calls(nodes, "eval") == len(nodes)
    assert not any(client.exists(LAYOUT.value(key)) for key in KEYS[:100])
    with MovedSlot(client, nodes, LAYOUT.value(KEYS[150])) as moved:
        moved.new.set(LAYOUT.value(KEYS[150]), "x")
        events = [Event(f"3-{i}", "key", key, version=5) for i, key in enumerate(KEYS[100:200])]
        applied = apply_events(client, events, layout=LAYOUT, fence_ttl=60)
        assert set(applied.outcomes.values()) == {InvalidationOutcome.APPLIED}
        assert moved.new.hget(LAYOUT.fence(KEYS[150]), "v") == b"5" and not moved.new.exists(LAYOUT.value(KEYS[150]))


async def test_a_batch_s_claims_are_released_one_call_per_node_and_all_when_a_slot_moved(
        redis_cluster: RedisCluster, cluster: tuple[Any, list[redis.Redis]]) -> None:
    from cachewarm.warming import claims

    client, nodes = cluster
    aclient = async_client(redis_cluster.url, timeout=5, cluster=True)
    try:
        await claims.release(aclient, LAYOUT, [f"warm:{i}" for i in range(30)])  # loaded on every master
        list(chunked(client, KEYS, _claim, 1, LAYOUT.claim))
        for node in nodes:
            node.config_resetstat()
        await claims.release(aclient, LAYOUT, KEYS[:100])
        assert not any(client.exists(LAYOUT.claim(key)) for key in KEYS[:100])
        assert _calls(nodes, "evalsha") == len(nodes)
        assert all(client.exists(LAYOUT.claim(key)) for key in KEYS[100:])
        client.delete(LAYOUT.claim(KEYS[150]))
        with MovedSlot(client, nodes, LAYOUT.claim(KEYS[150])) as moved:
            moved.new.set(LAYOUT.claim(KEYS[150]), "1")
            await claims.release(aclient, LAYOUT, KEYS[100:200])
            assert not moved.new.exists(LAYOUT.claim(KEYS[150]))
        assert not any(client.exists(LAYOUT.claim(key)) for key in KEYS[100:200])
    finally:
        await aclient.aclose()
