"""Applying a batch of invalidation events with the Redis layer's scripts, in one pipeline.

A key event runs lua/invalidate_key.lua: it bumps the key's fence generation (so a load or refresh in flight can no
longer write what it fetched before the change), raises the key's version floor when the event has a version, and
deletes the value, all atomically. An event whose version the cache already holds (or has passed) changes nothing:
outcome ``stale``. A tag event walks the tag's member set (a ZSCAN per step, lua/tag_members.lua) and invalidates
each member as a key event would, in the member's own slot (keys.py: why this fences every load in flight of a
key carrying the tag). The walks of every tag event of the batch share one pipeline per step, each step carrying
the previous step's invalidations and the next ZSCAN: one round trip more than the batch's own when a tag had
members. Members stay in the set (a load may still be in flight), so an event applied again walks them again.

A keyspace with ``fence_replica_wait`` (keyspaces.py) has the pipeline that invalidated its keys end with ``WAIT 1
<ms>`` on each master that holds some of them (same connection, after the scripts): the events count as applied once
a replica has the bumps and floors, or the wait ran out. A WAIT that failed (its connection broke: the master may
have died with the bumps) leaves its keys' events in error, pending, to be applied again (on the promoted
replica); connections.py keeps redis-py from resending a broken WAIT to other nodes, where it would return at once.
A wait that ran out (no replica acknowledged: one is down, lagging, or a failover just left the master without one)
is counted in ``Applied.unreplicated`` and the events are applied and acknowledged all the same: the master has
them, retrying cannot make a replica catch up, and leaving them pending would dead-letter every event of the
keyspace while a replica is down (docs/SCALING.md).

The caller learns which of the invalidated keys are hot (pinned, or hot by the scan's rule: decayed reads above
``hot_threshold`` on Redis's clock, popularity.is_hot, judged in Redis by lua/hot_members.lua), each once however
many events named it, so it can refresh them straight away.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from ..config.keyspaces import KeyspaceRegistry
from ..outcomes import InvalidationOutcome
from ..redis_layer import node_calls, script_calls, scripts
from ..redis_layer.keys import KeyLayout, shard_of
from ..redis_layer.popularity import half_life_ms
from ..redis_layer.script_calls import InvalidateStatus, TagStep
from .events import Event

TAG_BATCH = 500
MERGE_KEYS = 500  # key events per INVALIDATE_KEY call on one Redis (one call per key on a cluster)

@dataclass(slots=True)
class Applied:
    """What applying a batch did: per event outcome (applied, stale or error) and the keys it invalidated."""

    outcomes: dict[str, InvalidationOutcome] = field(default_factory=dict)  # entry id -> applied|stale|error
    errors: dict[str, str] = field(default_factory=dict)       # entry id -> the Redis error, for the log
    keys: list[str] = field(default_factory=list)              # invalidated keys, each once, in order
    hot: list[str] = field(default_factory=list)               # those of them that are hot (with `hotness`)
    unreplicated: int = 0  # WAITs (fence_replica_wait) that ran out before a replica acknowledged


def apply_events(client: redis.Redis, events: Sequence[Event], *, layout: KeyLayout, fence_ttl: int,
                 hotness: Hotness | None = None, keyspaces: KeyspaceRegistry | None = None) -> Applied:
    """Applies every event (in order: a later event of a key is applied after an earlier one). With `hotness`,
    also finds which invalidated keys are hot (`Applied.hot`), reading it in the same round trip for key events.
    `keyspaces` (or hotness's) tells which keys' fences are waited for (``fence_replica_wait``)."""
    result = Applied()
    if not events:
        return result
    waits = _ReplicaWaits(client, layout, keyspaces or (hotness.keyspaces if hotness is not None else None), result)
    seen: dict[str, None] = {}
    by_space = (_by_keyspace([e.target for e in events if e.kind == "key"], hotness.keyspaces)
                if hotness is not None else {})

    cluster = scripts.is_cluster(client)
    merged = sum(e.kind == "key" for e in events) > 1 and (not cluster or node_calls.enabled())
    calls, spans = (_calls(layout, events, fence_ttl, merged=merged) if not (cluster and merged)
                    else _node_calls(client, layout, events, fence_ttl))
    hot_calls = _hot_calls(by_space, layout, hotness) if hotness is not None else []
    waited = waits.keys([e.target for e in events if e.kind == "key"])
    raw = scripts.execute(client, calls + hot_calls,
                          waits.after(waited, lambda pipe: _queue_pins(pipe, by_space, layout)),
                          then_again=bool(waited))
    if cluster and merged:
        _not_here_again(client, layout, events, fence_ttl, spans, raw, waits, waited)
    replies = _per_event(raw, spans, len(events), merged=merged)
    unsure = waits.count(replies, waited)
    for i, event in enumerate(events):  # the master may be gone with the bumps: left pending, applied again
        if event.kind == "key" and event.target in unsure and not isinstance(replies[i], Exception):
            replies[i] = unsure[event.target]
    tag_replies = _drain_tags(client, layout, events, replies, fence_ttl, waits)
    for i, event in enumerate(events):
        reply = tag_replies.get(i, replies[i])
        if isinstance(reply, Exception):
            result.outcomes[event.entry_id] = InvalidationOutcome.ERROR
            result.errors[event.entry_id] = f"{type(reply).__name__}: {reply}"
        elif isinstance(reply, script_calls.Invalidated):
            applied = reply.status is InvalidateStatus.APPLIED
            result.outcomes[event.entry_id] = InvalidationOutcome.APPLIED if applied else InvalidationOutcome.STALE
            if applied:
                seen.setdefault(event.target)
        else:
            result.outcomes[event.entry_id] = InvalidationOutcome.APPLIED
            for member in reply:
                seen.setdefault(member.decode("utf-8", "surrogateescape"))
    result.keys = list(seen)
    if hotness is not None:
        hot = set(_hot_of(by_space, replies[len(events):], len(hot_calls)))
        asked = {k for keys in by_space.values() for k in keys}
        drained = [k for k in result.keys if k not in asked]
        if drained:  # tag members: known only now
            hot.update(hot_keys(client, drained, keyspaces=hotness.keyspaces, layout=layout,
                                half_life=hotness.half_life, threshold=hotness.threshold))
        result.hot = [k for k in result.keys if k in hot]
    return result


def _calls(layout: KeyLayout, events: Sequence[Event], fence_ttl: int, *,
           merged: bool) -> tuple[list[scripts.Call[Any]], list[list[int]]]:
    """The batch's script calls, and the events each one answers: one call per event, or (`merged`, one Redis) one
    INVALIDATE_KEY of many keys per MERGE_KEYS key events (in order) and one call per tag event."""
    if not merged:
        return ([script_calls.invalidate_key(layout, key=e.target, version=e.version, fence_ttl=fence_ttl)
                 if e.kind == "key" else script_calls.tag_members(layout, tag=e.target, cursor="0", count=TAG_BATCH)
                 for e in events], [[i] for i in range(len(events))])
    calls: list[scripts.Call[Any]] = []
    spans: list[list[int]] = []
    keyed = [i for i, e in enumerate(events) if e.kind == "key"]
    for start in range(0, len(keyed), MERGE_KEYS):
        chunk = keyed[start:start + MERGE_KEYS]
        calls.append(script_calls.invalidate_many(layout, [(events[i].target, events[i].version) for i in chunk],
                                                  fence_ttl=fence_ttl))
        spans.append(chunk)
    for i, e in enumerate(events):
        if e.kind != "key":
            calls.append(script_calls.tag_members(layout, tag=e.target, cursor="0", count=TAG_BATCH))
            spans.append([i])
    return calls, spans


def _node_calls(client: redis.Redis, layout: KeyLayout, events: Sequence[Event],
                fence_ttl: int) -> tuple[list[scripts.Call[Any]], list[list[int]]]:
    """`_calls` on a Redis Cluster: the key events grouped by the node of their key's slot, one INVALIDATE_KEY of
    many keys per node (node_calls.py; in order within a node, so a key's events stay in order), MERGE_KEYS at
    most; a key whose structures share no slot, or whose slot no master covers now, an event a call."""
    keyed = [i for i, e in enumerate(events) if e.kind == "key"]
    names = [layout.value(events[i].target) for i in keyed]
    calls: list[scripts.Call[Any]] = []
    spans: list[list[int]] = []
    for node, indexes in node_calls.by_node(client, names).items():
        alone = [keyed[j] for j in indexes if node is None or not node_calls.groupable(names[j])]
        together = [keyed[j] for j in indexes if node is not None and node_calls.groupable(names[j])]
        for start in range(0, len(together), MERGE_KEYS):
            chunk = together[start:start + MERGE_KEYS]
            call = script_calls.invalidate_many(layout, [(events[i].target, events[i].version) for i in chunk],
                                                fence_ttl=fence_ttl)
            calls.append(node_calls.on_node(call, 2) if len(chunk) > 1 else call)
            spans.append(chunk)
        for i in alone:
            calls.append(script_calls.invalidate_key(layout, key=events[i].target, version=events[i].version,
                                                     fence_ttl=fence_ttl))
            spans.append([i])
    for i, e in enumerate(events):
        if e.kind != "key":
            calls.append(script_calls.tag_members(layout, tag=e.target, cursor="0", count=TAG_BATCH))
            spans.append([i])
    return calls, spans


def _not_here_again(client: redis.Redis, layout: KeyLayout, events: Sequence[Event], fence_ttl: int,
                    spans: list[list[int]], raw: list[Any],
                    waits: _ReplicaWaits, waited: dict[Any, int]) -> None:
    """A node's call that found a key not on its node (a slot moved; nothing ran) is sent again an event a call,
    routed afresh, followed by the WAITs again (they must follow the bumps they wait for); its reply in `raw`
    becomes the list of theirs, and the WAITs' replies the retry's."""
    again = [c for c in range(len(spans)) if node_calls.not_here(raw[c])]
    if not again:
        return
    singles = [script_calls.invalidate_key(layout, key=events[i].target, version=events[i].version,
                                           fence_ttl=fence_ttl) for c in again for i in spans[c]]
    retried = scripts.execute(client, singles, waits.after(waited) if waited else None)
    at = 0
    for c in again:
        raw[c] = retried[at:at + len(spans[c])]
        at += len(spans[c])
    if waited:
        raw[len(raw) - len(waited):] = retried[len(retried) - len(waited):]


def _per_event(replies: list[Any], spans: list[list[int]], events: int, *, merged: bool) -> list[Any]:
    """One reply per event (a merged call's error is each of its events'), then the pipeline's other replies."""
    if not merged:  # one call per event, in order
        return replies
    out: list[Any] = [None] * events
    for reply, span in zip(replies, spans, strict=False):
        if isinstance(reply, list):  # INVALIDATE_KEY of many: one reply per key
            for j, i in enumerate(span):
                out[i] = reply[j]
        else:  # a tag event's first step, or an error (each of the call's events')
            for i in span:
                out[i] = reply
    return out + replies[len(spans):]


def _drain_tags(client: redis.Redis, layout: KeyLayout, events: Sequence[Event], replies: list[Any],
                fence_ttl: int, waits: _ReplicaWaits) -> dict[int, list[bytes] | Exception]:
    """Walks each tag event's member set (its first TAG_MEMBERS reply is in `replies`) and invalidates every member,
    the walks' steps in one pipeline each; returns, per tag event (by index), the members invalidated or the
    first error (the event is then left pending and walked again from the start)."""
    out: dict[int, list[bytes] | Exception] = {}
    steps: dict[int, TagStep] = {}
    for i, event in enumerate(events):
        if event.kind != "key":
            reply = replies[i]
            out[i] = reply if isinstance(reply, Exception) else []
            if isinstance(reply, TagStep) and (reply.members or reply.cursor != "0"):
                steps[i] = reply
    while steps:
        order = list(steps)
        calls: list[scripts.Call[Any]] = []
        spans: list[tuple[int, int, bool]] = []
        for i in order:
            step, start = steps[i], len(calls)
            calls += [script_calls.invalidate_key(layout, key=m.decode("utf-8", "surrogateescape"), version=None,
                                                  fence_ttl=fence_ttl) for m in step.members]
            more = step.cursor != "0"
            if more:
                calls.append(script_calls.tag_members(layout, tag=events[i].target, cursor=step.cursor,
                                                      count=TAG_BATCH))
            spans.append((start, len(calls), more))
        waited = waits.keys([m.decode("utf-8", "surrogateescape") for i in order for m in steps[i].members])
        results = scripts.execute(client, calls, waits.after(waited), then_again=bool(waited))
        unsure = waits.count(results, waited)
        for i in [i for i in order if unsure and any(m.decode("utf-8", "surrogateescape") in unsure
                                                     for m in steps[i].members)]:
            out[i] = next(iter(unsure.values()))  # in error (below): walked again from the start
        for i, (start, end, more) in zip(order, spans, strict=True):
            done, mine = out[i], results[start:end]
            failed = next((r for r in mine if isinstance(r, Exception)), None)
            if failed is not None or isinstance(done, Exception):
                out[i] = failed if failed is not None else done
                del steps[i]
                continue
            done += steps[i].members
            if more:
                steps[i] = mine[-1]
            else:
                del steps[i]
    return out


class _ReplicaWaits:
    """The WAITs of `fence_replica_wait`: one per master holding waited keys, at the end of their pipeline."""

    def __init__(self, client: redis.Redis, layout: KeyLayout, keyspaces: KeyspaceRegistry | None,
                 result: Applied) -> None:
        self.client, self.layout, self.result = client, layout, result
        self.ms = {ks.name: int(ks.config.fence_replica_wait * 1000) for ks in keyspaces or ()
                   if ks.config.fence_replica_wait > 0}
        self.keyspaces = keyspaces

    def keys(self, keys: Sequence[str]) -> dict[Any, int]:
        """The masters to WAIT on (None: the one Redis) and each one's timeout in ms, for these invalidated keys."""
        self.members: dict[Any, list[str]] = {}
        if not self.ms or self.keyspaces is None:
            return {}
        nodes: dict[Any, int] = {}
        cluster = scripts.is_cluster(self.client)
        for key in keys:
            try:
                found = self.keyspaces.find(key)
            except ValueError:
                continue
            ms = self.ms.get(found[0].name, 0) if found is not None else 0
            if ms:
                node = (self.client.nodes_manager.get_node_from_slot(  # type: ignore[attr-defined]
                    self.client.keyslot(self.layout.fence(key))) if cluster else None)  # type: ignore[attr-defined]
                nodes[node] = max(ms, nodes.get(node, 0))
                self.members.setdefault(node, []).append(key)
        return nodes

    @staticmethod
    def after(nodes: dict[Any, int], first: Callable[[Any], None] | None = None) -> Callable[[Any], None]:
        """What queues `first`'s commands, then the WAITs (last: their replies are the pipeline's last)."""
        def queue(pipe: Any) -> None:
            if first is not None:
                first(pipe)
            for node, ms in nodes.items():
                if node is None:
                    pipe.execute_command("WAIT", 1, ms)
                else:
                    pipe.execute_command("WAIT", 1, ms, target_nodes=node)
        return queue

    def count(self, replies: list[Any], nodes: dict[Any, int]) -> dict[str, Exception]:
        """Counts the WAITs that ran out; returns the keys of the masters whose WAIT failed (its connection broke:
        the master may have died before a replica had the bumps), each with the error."""
        unsure: dict[str, Exception] = {}
        for node, reply in zip(nodes, replies[len(replies) - len(nodes):], strict=True):
            if isinstance(reply, Exception):
                unsure.update((key, reply) for key in self.members.get(node, ()))
            elif reply < 1:
                self.result.unreplicated += 1
        return unsure


@dataclass(frozen=True, slots=True)
class Hotness:
    """What makes a key hot: pinned in its keyspace, or decayed reads above threshold (popularity.is_hot)."""

    keyspaces: KeyspaceRegistry
    half_life: float
    threshold: float


def _by_keyspace(keys: Sequence[str], keyspaces: KeyspaceRegistry) -> dict[str, list[str]]:
    by_space: dict[str, list[str]] = {}
    for key in dict.fromkeys(keys):
        try:
            found = keyspaces.find(key)
        except ValueError:
            continue
        if found is not None:
            by_space.setdefault(found[0].name, []).append(key)
    return by_space


def _hot_calls(by_space: dict[str, list[str]], layout: KeyLayout,
               hotness: Hotness) -> list[scripts.Call[list[bool]]]:
    """Per keyspace, per hot-set shard holding some of the keys: a HOT_MEMBERS call judging them."""
    return [script_calls.hot_members(layout, keyspace=space, shard=shard, keys=members, threshold=hotness.threshold,
                                     half_life_ms=half_life_ms(hotness.half_life))
            for space, keys in by_space.items() for shard, members in _by_shard(keys).items()]


def _queue_pins(pipe: redis.client.Pipeline, by_space: dict[str, list[str]], layout: KeyLayout) -> None:
    """Per keyspace: which of the keys are pinned."""
    for space, keys in by_space.items():
        pipe.smismember(layout.pinned(space), keys)  # type: ignore[arg-type]


def _by_shard(keys: Sequence[str]) -> dict[int, list[str]]:
    shards: dict[int, list[str]] = {}
    for key in keys:
        shards.setdefault(shard_of(key), []).append(key)
    return shards


def _hot_of(by_space: dict[str, list[str]], replies: Sequence[Any], calls: int) -> list[str]:
    """The hot keys, from the replies of the `calls` HOT_MEMBERS calls (`_hot_calls`) and then of the pins."""
    hot: list[str] = []
    at = 0
    for keys in by_space.values():
        for members in _by_shard(keys).values():
            flags, at = replies[at], at + 1
            if not isinstance(flags, Exception):
                hot += [key for key, flag in zip(members, flags, strict=True) if flag]
    for keys, pinned in zip(by_space.values(), replies[calls:calls + len(by_space)], strict=True):
        if not isinstance(pinned, Exception):
            hot += [key for key, pin in zip(keys, pinned, strict=True) if pin]
    return hot


def hot_keys(client: redis.Redis, keys: Sequence[str], *, keyspaces: KeyspaceRegistry, layout: KeyLayout,
             half_life: float, threshold: float) -> list[str]:
    """The keys (of some keyspace) that are pinned, or whose decayed read count is above threshold; raises the
    first Redis error."""
    by_space = _by_keyspace(keys, keyspaces)
    if not by_space:
        return []
    calls = _hot_calls(by_space, layout, Hotness(keyspaces, half_life, threshold))
    replies = scripts.execute(client, calls, lambda pipe: _queue_pins(pipe, by_space, layout))
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return _hot_of(by_space, replies, len(calls))
