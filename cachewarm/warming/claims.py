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

from ..redis_layer import node_calls, scripts

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
