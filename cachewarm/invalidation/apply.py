"""Applying a batch of invalidation events with the store scripts, in one pipeline.

A key event runs store.INVALIDATE_KEY: it bumps the key's fence generation (so a load or refresh in flight can no
longer write what it fetched before the change), raises the key's version floor when the event has a version, and
deletes the value, all atomically. An event whose version the cache already holds (or has passed) changes nothing:
outcome ``stale``. A tag event bumps the tag's generation (fencing every load in flight of a key carrying it), then
drains the tag's membership set, invalidating each member as a key event would.

The caller learns which of the invalidated keys are hot (pinned, or decayed reads above ``hot_threshold``, as in
access.py), each once however many events named it, so it can refresh them straight away.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from .. import store
from ..keys import KeyLayout
from ..keyspaces import KeyspaceRegistry
from ..outcomes import InvalidationOutcome
from ..popularity import decay_scale
from .events import Event

TAG_BATCH = 500

TAG_DRAIN_KEYS = """
-- KEYS: tag set   ARGV: value prefix, fence prefix, fence_ttl, batch.  store.TAG_DRAIN, returning the keys.
local members = redis.call('SPOP', KEYS[1], tonumber(ARGV[4]))
for _, key in ipairs(members) do
  redis.call('HINCRBY', ARGV[2] .. key, 'g', 1)
  redis.call('EXPIRE', ARGV[2] .. key, ARGV[3])
  redis.call('DEL', ARGV[1] .. key)
end
return members
"""
tag_drain_keys_script = store.LuaScript(TAG_DRAIN_KEYS)


@dataclass(slots=True)
class Applied:
    """What applying a batch did: per event outcome (applied, stale or error) and the keys it invalidated."""

    outcomes: dict[str, InvalidationOutcome] = field(default_factory=dict)  # entry id -> applied|stale|error
    errors: dict[str, str] = field(default_factory=dict)       # entry id -> the Redis error, for the log
    keys: list[str] = field(default_factory=list)              # invalidated keys, each once, in order
    hot: list[str] = field(default_factory=list)               # those of them that are hot (with `hotness`)


def _load_scripts(client: redis.Redis) -> None:
    store.ensure_loaded(client)
    client.script_load(TAG_DRAIN_KEYS)


def _execute(client: redis.Redis, queue: Any) -> list[Any]:
    """Runs a pipeline built by `queue(pipe)`; loads the scripts once on NOSCRIPT (e.g. after a restart)."""
    for attempt in (0, 1):
        pipe = client.pipeline(transaction=False)
        queue(pipe)
        results: list[Any] = pipe.execute(raise_on_error=False)
        if attempt == 0 and any(isinstance(r, redis.exceptions.NoScriptError) for r in results):
            _load_scripts(client)
            continue
        return results
    raise AssertionError("unreachable")


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

    def queue(pipe: redis.client.Pipeline) -> None:
        for event in events:
            if event.kind == "key":
                store.invalidate_key_script.queue(
                    pipe, [layout.value(event.target), layout.fence(event.target)],
                    ["" if event.version is None else event.version, fence_ttl])
            else:
                store.tag_bump_script.queue(pipe, [layout.tag_gen(event.target)], [fence_ttl])
                tag_drain_keys_script.queue(pipe, [layout.tag(event.target)],
                                            [layout.value_prefix, layout.fence_prefix, fence_ttl, TAG_BATCH])
        _queue_hot(pipe, by_space, layout)

    replies = iter(_execute(client, queue))
    for event in events:
        replies_of_event = [next(replies)] if event.kind == "key" else [next(replies), next(replies)]
        failed = next((r for r in replies_of_event if isinstance(r, Exception)), None)
        if failed is not None:
            result.outcomes[event.entry_id] = InvalidationOutcome.ERROR
            result.errors[event.entry_id] = f"{type(failed).__name__}: {failed}"
            continue
        if event.kind == "key":
            applied = int(replies_of_event[0][0]) == 1
            result.outcomes[event.entry_id] = InvalidationOutcome.APPLIED if applied else InvalidationOutcome.STALE
            if applied:
                seen.setdefault(event.target)
            continue
        members: list[bytes] = list(replies_of_event[1])
        try:
            while len(members) and len(members) % TAG_BATCH == 0:
                more = tag_drain_keys_script(client, [layout.tag(event.target)],
                                             [layout.value_prefix, layout.fence_prefix, fence_ttl, TAG_BATCH])
                members += more
                if len(more) < TAG_BATCH:
                    break
        except redis.exceptions.ResponseError as exc:
            result.outcomes[event.entry_id] = InvalidationOutcome.ERROR
            result.errors[event.entry_id] = f"{type(exc).__name__}: {exc}"
            continue
        result.outcomes[event.entry_id] = InvalidationOutcome.APPLIED
        for member in members:
            seen.setdefault(member.decode("utf-8", "surrogateescape"))
    result.keys = list(seen)
    if hotness is not None:
        hot = set(_hot_of(by_space, list(replies), hotness))
        asked = {k for keys in by_space.values() for k in keys}
        drained = [k for k in result.keys if k not in asked]
        if drained:  # tag members: known only now
            hot.update(hot_keys(client, drained, keyspaces=hotness.keyspaces, layout=layout,
                                half_life=hotness.half_life, threshold=hotness.threshold))
        result.hot = [k for k in result.keys if k in hot]
    return result


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


