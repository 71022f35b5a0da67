"""The scan's Redis access for its candidates: the due test (lua/due.lua) and the claims (lua/claim.lua).

On one Redis a call covers _CHUNK keys (a round trip per few thousand keys instead of a pipelined command per key,
which cost the worker ~40 us of Python per key). On a Redis Cluster a script's keys must be on one node: the keys
are grouped by the node owning their slot and each node gets one call of up to _CHUNK keys (node_calls.py, issue
29: it was one call per key, a script call per key per scan on every node); a call that finds a slot moved is sent
again one call per key, which redis-py routes afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import redis
import redis.asyncio

from ..redis_layer import node_calls, script_calls, scripts
from ..redis_layer.keys import KeyLayout

R = TypeVar("R")

_CHUNK = 5000


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def chunked(client: redis.Redis, keys: list[str], make: Callable[[list[str]], scripts.Call[R]],
            stride: int, name: Callable[[str], str]) -> Iterator[R]:
    """The replies of `make` over keys (`stride`: the Redis keys per cache key in its calls; `name`: the first
    Redis key of a cache key's, whose slot is the key's)."""
    if not scripts.is_cluster(client):
        yield from _run(client, [make(chunk) for chunk in _chunks(keys, _CHUNK)])
        return
    if not node_calls.enabled():
        for group in _chunks(keys, _CHUNK):
            yield from _run(client, [make([key]) for key in group])
        return
    names = {key: name(key) for key in keys}
    groups: list[list[str]] = [[key] for key in keys if not node_calls.groupable(names[key])]
    routes = [key for key in keys if node_calls.groupable(names[key])]
    for node, indexes in node_calls.by_node(client, [names[key] for key in routes]).items():
        members = [routes[i] for i in indexes]
        groups += [[key] for key in members] if node is None else list(_chunks(members, _CHUNK))
    calls = [node_calls.on_node(make(group), stride) if len(group) > 1 else make(group) for group in groups]
    replies = scripts.execute(client, calls)
    for group, reply in zip(groups, replies, strict=True):
        if node_calls.not_here(reply):
            yield from _run(client, [make([key]) for key in group])
        else:
            yield from _run_reply(reply)


def _run(client: redis.Redis, calls: list[scripts.Call[R]]) -> Iterator[R]:
    for reply in scripts.execute(client, calls):
        yield from _run_reply(reply)


def _run_reply(reply: R | Exception) -> Iterator[R]:
    if isinstance(reply, Exception):
        raise reply
    yield reply


PER_NODE_FROM = 8  # a batch of fewer keys (a hot refresh's one or two) keeps its DELs in its stats pipeline


def per_node_release(client: redis.asyncio.Redis, keys: int) -> bool:
    """Whether a refresh batch's claims go as one UNCLAIM per node (`release`) instead of a DEL each (a cluster)."""
    return keys >= PER_NODE_FROM and scripts.is_cluster(client) and node_calls.enabled()


async def release(client: redis.asyncio.Redis, layout: KeyLayout, keys: list[str]) -> None:
    """Deletes the claims of a refresh batch's keys on a Redis Cluster, one call per node (a DEL each was a
    command per key for redis-py to route); a node's call that finds a slot moved is sent again a key a call.
    Errors are raised (the claims then lapse on their own)."""
    await client.initialize()  # type: ignore[attr-defined]  # its slot map (at once when known)
    names = [layout.claim(key) for key in keys]
    groups = [[keys[i] for i in indexes] for node, indexes in node_calls.by_node(client, names).items()
              if node is not None]
    known = {key for group in groups for key in group}
    groups += [[key] for key in keys if key not in known]
    calls = [node_calls.on_node(script_calls.unclaim(layout, keys=group), 1) if len(group) > 1
             else script_calls.unclaim(layout, keys=group) for group in groups]
    replies = await scripts.aexecute(client, calls)
    again = [script_calls.unclaim(layout, keys=[key]) for group, reply in zip(groups, replies, strict=True)
             if node_calls.not_here(reply) for key in group]
    if again:
        replies = await scripts.aexecute(client, again)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
