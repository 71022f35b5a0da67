"""Applying a batch of invalidation events with the store scripts, in one pipeline.

A key event runs lua/invalidate_key.lua: it bumps the key's fence generation (so a load or refresh in flight can no
longer write what it fetched before the change), raises the key's version floor when the event has a version, and
deletes the value, all atomically. An event whose version the cache already holds (or has passed) changes nothing:
outcome ``stale``. A tag event bumps the tag's generation (fencing every load in flight of a key carrying it), then
drains the tag's membership set, invalidating each member as a key event would: the bump's reply names the first
members, each drain (their keys in KEYS) removes them and names the next ones. The drains of every tag event of
the batch share one pipeline per step: one round trip more than the batch's own when a tag had members.

The caller learns which of the invalidated keys are hot (pinned, or decayed reads above ``hot_threshold``, as in
access.py), each once however many events named it, so it can refresh them straight away.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from .. import script_calls, scripts
from ..keys import KeyLayout
from ..keyspaces import KeyspaceRegistry
from ..outcomes import InvalidationOutcome
from ..popularity import decay_scale
from ..script_calls import InvalidateStatus, TagBatch
from .events import Event

TAG_BATCH = 500

@dataclass(slots=True)
class Applied:
    """What applying a batch did: per event outcome (applied, stale or error) and the keys it invalidated."""

    outcomes: dict[str, InvalidationOutcome] = field(default_factory=dict)  # entry id -> applied|stale|error
    errors: dict[str, str] = field(default_factory=dict)       # entry id -> the Redis error, for the log
    keys: list[str] = field(default_factory=list)              # invalidated keys, each once, in order
    hot: list[str] = field(default_factory=list)               # those of them that are hot (with `hotness`)


def apply_events(client: redis.Redis, events: Sequence[Event], *, layout: KeyLayout, fence_ttl: int,
                 hotness: Hotness | None = None) -> Applied:
    """Applies every event (in order: a later event of a key is applied after an earlier one). With `hotness`,
    also finds which invalidated keys are hot (`Applied.hot`), reading it in the same round trip for key events."""
    result = Applied()
    if not events:
        return result
    seen: dict[str, None] = {}
    by_space = (_by_keyspace([e.target for e in events if e.kind == "key"], hotness.keyspaces)
                if hotness is not None else {})

    calls = [script_calls.invalidate_key(layout, key=e.target, version=e.version, fence_ttl=fence_ttl)
             if e.kind == "key" else script_calls.tag_bump(layout, tag=e.target, fence_ttl=fence_ttl, batch=TAG_BATCH)
             for e in events]
    replies = scripts.execute(client, calls, lambda pipe: _queue_hot(pipe, by_space, layout))
    tag_replies = _drain_tags(client, layout, events, replies, fence_ttl)
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
        hot = set(_hot_of(by_space, replies[len(calls):], hotness))
        asked = {k for keys in by_space.values() for k in keys}
        drained = [k for k in result.keys if k not in asked]
        if drained:  # tag members: known only now
            hot.update(hot_keys(client, drained, keyspaces=hotness.keyspaces, layout=layout,
                                half_life=hotness.half_life, threshold=hotness.threshold))
        result.hot = [k for k in result.keys if k in hot]
    return result


def _drain_tags(client: redis.Redis, layout: KeyLayout, events: Sequence[Event], replies: list[Any],
                fence_ttl: int) -> dict[int, list[bytes] | Exception]:
    """Invalidates the members of each tag event's set (its TAG_BUMP reply named the first ones), the tags' drains
    in one pipeline per step; returns, per tag event (by index), the members invalidated or the error."""
    out: dict[int, list[bytes] | Exception] = {}
    steps: dict[int, TagBatch] = {}
    for i, event in enumerate(events):
        if event.kind != "key":
            reply = replies[i]
            out[i] = reply if isinstance(reply, Exception) else []
            if isinstance(reply, TagBatch) and reply.members:
                steps[i] = reply
    while steps:
        order = list(steps)
        calls = [script_calls.tag_drain(layout, tag=events[i].target, members=steps[i].members, fence_ttl=fence_ttl,
                                        batch=TAG_BATCH) for i in order]
        for i, reply in zip(order, scripts.execute(client, calls), strict=True):
            done = out[i]
            if isinstance(reply, Exception) or isinstance(done, Exception):
                out[i] = reply
                del steps[i]
                continue
            done += steps[i].members
            if reply.members:
                steps[i] = reply
            else:
                del steps[i]
    return out


@dataclass(frozen=True, slots=True)
class Hotness:
    """What makes a key hot: pinned in its keyspace, or decayed reads above threshold (see access.py)."""

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


def _queue_hot(pipe: redis.client.Pipeline, by_space: dict[str, list[str]], layout: KeyLayout) -> None:
    for space, keys in by_space.items():
        pipe.get(layout.hot_epoch(space))
        pipe.zmscore(layout.hot(space), keys)
        pipe.smismember(layout.pinned(space), keys)  # type: ignore[arg-type]


def _hot_of(by_space: dict[str, list[str]], replies: Sequence[Any], hotness: Hotness) -> list[str]:
    now_ms = time.time() * 1000
    hot: list[str] = []
    for i, keys in enumerate(by_space.values()):
        epoch_raw, scores, pinned = replies[3 * i], replies[3 * i + 1], replies[3 * i + 2]
        if any(isinstance(r, Exception) for r in (epoch_raw, scores, pinned)):
            continue
        scale = decay_scale(now_ms, float(epoch_raw), hotness.half_life) if epoch_raw is not None else None
        for key, score, pin in zip(keys, scores, pinned, strict=True):
            if pin or (score is not None and scale is not None and score / scale > hotness.threshold):
                hot.append(key)
    return hot


def hot_keys(client: redis.Redis, keys: Sequence[str], *, keyspaces: KeyspaceRegistry, layout: KeyLayout,
             half_life: float, threshold: float) -> list[str]:
    """The keys (of some keyspace) that are pinned, or whose decayed read count is above threshold."""
    by_space = _by_keyspace(keys, keyspaces)
    if not by_space:
        return []
    pipe = client.pipeline(transaction=False)
    _queue_hot(pipe, by_space, layout)
    return _hot_of(by_space, pipe.execute(), Hotness(keyspaces, half_life, threshold))


