"""Running the Lua scripts of cachewarm/redis_layer/lua/: loading, the one NOSCRIPT retry, and pipelines.

Each script is a .lua file (its KEYS, ARGV and reply documented at its top) with lua/preamble.lua prepended. It is
run by EVALSHA; a NOSCRIPT reply (Redis restarted, or SCRIPT FLUSH) sends a single call again as EVAL of its source,
which runs it and caches it in Redis in one command: here and nowhere else. A pipeline whose calls got NOSCRIPT
loads each of their scripts once (SCRIPT LOAD, on every master of a cluster) and sends them again as EVALSHA: on a
fresh server every call of the first pipeline of a script fails, and resending each as EVAL of the whole source
cost ~2 full-source EVALs per key in the first scan of a cluster (BENCHMARKS.md, issue 10). A pipeline of
PRELOAD_AT calls or more of a script this client has not yet seen run loads it first (one SCRIPT LOAD per client and
script), so that first pipeline does not fail call by call either.

redis-py's own `register_script` reloads by itself too, but on pipelines it sends a SCRIPT EXISTS before every
execute: a round trip more per pipeline, ~20% on a pipeline of 20 calls (measured for issue 9), and the refresh and
invalidation paths run one pipeline after another.

A script is called through a typed function of script_calls.py that returns a `Call`: the script, its KEYS (every
key the script touches, none built inside Lua) and ARGV, and how to decode the reply into a named result. `run`,
`arun` and `execute` / `aexecute` (pipelined) send calls.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Generic, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

R = TypeVar("R")

Pipeline = redis.client.Pipeline
AsyncPipeline = redis.asyncio.client.Pipeline


class Script:
    """One script: lua/<name>.lua after the preamble, known to Redis by its SHA1."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


def _read(name: str) -> str:
    return (resources.files("cachewarm.redis_layer") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


_PREAMBLE = _read("preamble")
SCRIPTS: dict[str, Script] = {}


def script(name: str) -> Script:
    """The script of lua/<name>.lua (read once per process)."""
    found = SCRIPTS.get(name)
    if found is None:
        found = SCRIPTS[name] = Script(name, _PREAMBLE + "\n" + _read(name))
    return found


@dataclass(frozen=True, slots=True)
class Call(Generic[R]):
    """One script call, ready to send: `decode` turns the reply into the script's named result."""

    script: Script
    keys: Sequence[str | bytes]
    args: Sequence[str | bytes | int | float]
    decode: Callable[[Any], R]
    route: str | bytes | None = None  # a call of no declared keys sent to this key's node (node_calls.py)

    def _target(self, pipe: Pipeline | AsyncPipeline) -> Any:
        """On a sync cluster pipeline the node of the call's first key (or `route`), else None."""
        first = self.route if self.route is not None else (self.keys[0] if self.keys else None)
        if first is None or not isinstance(pipe, redis.cluster.ClusterPipeline):
            return None
        try:
            return pipe.nodes_manager.get_node_from_slot(pipe.keyslot(first))
        except redis.exceptions.SlotNotCoveredError:  # a failed master's slots: left to redis-py's routing
            return None

    def queue(self, pipe: Pipeline | AsyncPipeline) -> None:
        # execute_command, not pipe.evalsha: redis-py's cluster pipelines refuse the evalsha method. The sync
        # cluster pipeline of redis-py 8.1 would ask the server (COMMAND GETKEYS, a round trip) for every EVALSHA
        # it routes; it is given the node owning the first key's slot instead (all of a call's keys are in one
        # slot: keys.py). A MOVED/ASK reply is resent by redis-py routed afresh, as without `target_nodes`.
        self._send(pipe, "EVALSHA", self.script.sha)

    def queue_source(self, pipe: Pipeline | AsyncPipeline) -> None:
        """The call as EVAL of the whole source: runs it and leaves it cached in Redis, in one command."""
        self._send(pipe, "EVAL", self.script.source)

    def _send(self, pipe: Pipeline | AsyncPipeline, command: str, script: str) -> None:
        node = self._target(pipe)
        if node is None and self.route is not None and isinstance(pipe, redis.asyncio.cluster.ClusterPipeline):
            node = _async_node(pipe, self.route)
        if node is not None:
            pipe.execute_command(command, script, len(self.keys), *self.keys, *self.args, target_nodes=node)
        else:
            pipe.execute_command(command, script, len(self.keys), *self.keys, *self.args)


def _async_node(pipe: Any, key: str | bytes) -> Any:
    """The node owning the key's slot for an asyncio cluster pipeline (None: not covered)."""
    cluster = pipe.cluster_client
    try:
        return cluster.nodes_manager.get_node_from_slot(cluster.keyslot(key))
    except redis.exceptions.SlotNotCoveredError:
        return None


def is_cluster(client: Any) -> bool:
    """Whether the client talks to a Redis Cluster (a script or a multi-key command must stay in one slot)."""
    return isinstance(client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster)


def run(client: redis.Redis, call: Call[R]) -> R:
    try:
        reply = client.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
    except redis.exceptions.NoScriptError:
        reply = client.eval(call.script.source, len(call.keys), *call.keys, *call.args)
    return call.decode(reply)


async def arun(client: redis.asyncio.Redis, call: Call[R]) -> R:
    try:
        reply = await client.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)  # type: ignore[misc]
    except redis.exceptions.NoScriptError:
        reply = await client.eval(call.script.source, len(call.keys), *call.keys, *call.args)  # type: ignore[misc]
    return call.decode(reply)


def _decoded(calls: Sequence[Call[Any]], replies: list[Any]) -> list[Any]:
    """Each call's named result, or the exception its reply was; then the replies of the plain commands."""
    out = [r if isinstance(r, Exception) else c.decode(r) for c, r in zip(calls, replies, strict=False)]
    return out + replies[len(calls):]


def _unloaded(calls: Sequence[Call[Any]], replies: list[Any]) -> list[int]:
    return [i for i, r in enumerate(replies[:len(calls)]) if isinstance(r, redis.exceptions.NoScriptError)]


def _queued(pipe: Any, calls: Sequence[Call[Any]]) -> Any:
    for call in calls:
        call.queue(pipe)
    return pipe


PRELOAD_AT = 8  # calls of one script in a pipeline from which an unseen script is loaded before sending
_seen: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()  # client -> scripts seen run or loaded


def _unseen(client: Any, calls: Sequence[Call[Any]]) -> list[Script]:
    """The scripts of PRELOAD_AT calls or more this client has not yet run or loaded (they go to SCRIPT LOAD)."""
    if len(calls) < PRELOAD_AT:
        return []
    seen = _seen.setdefault(client, set())
    if all(call.script.sha in seen for call in calls):
        return []
    counts: dict[str, int] = {}
    for call in calls:
        counts[call.script.sha] = counts.get(call.script.sha, 0) + 1
    return [s for s in {c.script.sha: c.script for c in calls}.values()
            if s.sha not in seen and counts[s.sha] >= PRELOAD_AT]


def _mark_seen(client: Any, calls: Sequence[Call[Any]]) -> None:
    _seen.setdefault(client, set()).update({call.script.sha for call in calls})


def _queue_retry(pipe: Any, calls: Sequence[Call[Any]], again: list[int], *, source: bool) -> Any:
    """Queues the calls whose script Redis lacked: as EVALSHA once their scripts are loaded, else as EVAL of their
    source (which loads it)."""
    for i in again:
        if source:
            calls[i].queue_source(pipe)
        else:
            calls[i].queue(pipe)
    return pipe


def _scripts_of(calls: Sequence[Call[Any]], again: list[int]) -> list[Script]:
    return list({calls[i].script.sha: calls[i].script for i in again}.values())


def _splice(replies: list[Any], again: list[int], retried: list[Any]) -> list[Any]:
    for i, reply in zip(again, retried, strict=True):
        replies[i] = reply
    return replies


def execute(client: redis.Redis, calls: Sequence[Call[Any]],
            then: Callable[[Pipeline], None] | None = None, *, then_again: bool = False) -> list[Any]:
    """Sends calls (then the plain commands `then` queues) in one pipeline, errors returned in place. Calls whose
    script Redis did not have are sent again (only those, so nothing runs twice), after one SCRIPT LOAD per
    script; with `then_again` (`then`'s commands idempotent: reads, a WAIT), `then`'s commands follow them once more
    and their replies are the retry's."""
    unseen = _unseen(client, calls)
    for missing in unseen:  # SCRIPT LOAD goes to every master of a cluster (redis-py routes it so)
        client.script_load(missing.source)
    pipe = _queued(client.pipeline(transaction=False), calls)
    if then is not None:
        then(pipe)
    replies: list[Any] = pipe.execute(raise_on_error=False)
    again = _unloaded(calls, replies)
    for source in (False, True):  # a node that lost them again meanwhile (a failover): EVAL, which cannot miss
        if not again:
            break
        if not source:
            for missing in _scripts_of(calls, again):
                client.script_load(missing.source)
        retry = _queue_retry(client.pipeline(transaction=False), calls, again, source=source)
        if then is not None and then_again:  # idempotent commands, a WAIT that must follow the writes it waits for
            then(retry)
        retried: list[Any] = retry.execute(raise_on_error=False)
        _splice(replies, again, retried[:len(again)])
        if then is not None and then_again:
            replies[len(calls):] = retried[len(again):]
        again = _unloaded(calls, replies)
    if len(calls) >= PRELOAD_AT:  # each of their scripts has now run or been loaded
        _mark_seen(client, calls)
    return _decoded(calls, replies)


async def aexecute(client: redis.asyncio.Redis, calls: Sequence[Call[Any]]) -> list[Any]:
    """`execute` for the async client (calls only)."""
    unseen = _unseen(client, calls)
    for missing in unseen:
        await client.script_load(missing.source)  # type: ignore[misc]
    replies: list[Any] = await _queued(client.pipeline(transaction=False), calls).execute(raise_on_error=False)
    again = _unloaded(calls, replies)
    if again:
        for missing in _scripts_of(calls, again):
            await client.script_load(missing.source)  # type: ignore[misc]
        _splice(replies, again, await _queue_retry(client.pipeline(transaction=False), calls, again,
                                                   source=False).execute(raise_on_error=False))
        again = _unloaded(calls, replies)
        if again:
            _splice(replies, again, await _queue_retry(client.pipeline(transaction=False), calls, again,
                                                       source=True).execute(raise_on_error=False))
    if len(calls) >= PRELOAD_AT:
        _mark_seen(client, calls)
    return _decoded(calls, replies)
