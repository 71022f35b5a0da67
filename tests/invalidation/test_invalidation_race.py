"""The stale-set race: a load or refresh is held inside its source call while the writer commits and the
invalidation is applied; after quiescence the cache holds the newest version or nothing.

A seeded random schedule places the writer's commit and its invalidation (key event with or without version, tag
event, or a write-through `set(version=)`) anywhere around the loader's three points: fence/lease taken, source
read, write. Without the fence (or with the invalidation applied as a plain DEL), the rounds where the loader read
before the commit and wrote after the invalidation leave the old value cached.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from cachewarm import Cache, Settings
from cachewarm.invalidation.apply import apply_events
from cachewarm.invalidation.events import Event
from cachewarm.redis_layer import envelope, script_calls, scripts
from cachewarm.redis_layer.keys import KeyLayout
from tests.support.redis_cluster import topologies

ROUNDS = 240
SEED = 20261123

DB: dict[str, dict[str, Any]] = {}
GATES: dict[str, Gate] = {}


class Gate:
    """Holds a source call: `entered` -> wait may_read -> read the row -> `read` -> wait may_return."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.may_read = threading.Event()
        self.read = threading.Event()
        self.may_return = threading.Event()


def source(id: str) -> dict[str, Any] | None:
    gate = GATES.get(id)
    if gate is not None:
        gate.entered.set()
        gate.may_read.wait(10)
    row = dict(DB[id]) if id in DB else None
    if gate is not None:
        gate.read.set()
        gate.may_return.wait(10)
    return row


CONFIG = f"""
[keyspaces.vitem]
pattern = "vitem:{{id}}"
source = "python:{__name__}:source"
ttl = 300
version_field = "version"
tags = ["vitems"]

[keyspaces.pitem]
pattern = "pitem:{{id}}"
source = "python:{__name__}:source"
ttl = 300
tags = ["pitems"]
"""


def _refresh(client: redis.Redis, settings: Settings, layout: KeyLayout, key: str, tag: str,
             versioned: bool) -> None:
    """A refresh as a worker does it with the store scripts: lease and fence token, fetch, fenced write."""
    id = key.split(":", 1)[1]
    scripts.run(client, script_calls.enlist(layout, tag=tag, key=key, keep_ms=600_000))  # keys.py: before the token
    leased = scripts.run(client, script_calls.lease(layout, key=key, token="w=race|1", lease_ms=30_000,
                                                    ahead_ms=None))
    row = source(id)
    assert row is not None
    version = row["version"] if versioned else None
    raw = envelope.encode(envelope.dumps(row), fetched_ms=int(time.time() * 1000), ttl_ms=300_000, version=version)
    scripts.run(client, script_calls.write(layout, key=key, envelope=raw, px=300_000, fence=leased.fence,
                                           lease_token="w=race|1", version=version, fence_ttl=settings.fence_ttl,
                                           bump=False))


def _plan_round(rng: random.Random) -> dict[str, Any]:
    commit = rng.randrange(4)
    return {
        "space": rng.choice(["vitem", "pitem"]),
        "loader": rng.choice(["read", "refresh"]),
        "prefill": rng.random() < 0.5,
        "writer": rng.choice(["event_version", "event", "tag", "set"]),
        "commit_slot": commit,
        "apply_slot": rng.randrange(commit, 4),
        "replay_slot": rng.choice([None, rng.randrange(commit, 4)]),
    }


@topologies
def test_no_stale_value_survives_any_interleaving(
        write_config: Callable[[str], Path], make_cache: Callable[..., Cache], redis_client: redis.Redis) -> None:
    cache = make_cache(write_config(CONFIG))
    settings = cache.settings
    layout = cache.layout
    rng = random.Random(SEED)
    stale: list[str] = []
    for n in range(ROUNDS):
        plan = _plan_round(rng)
        space, id = plan["space"], f"r{n}"
        key, tag = f"{space}:{id}", f"{space}s"
        versioned = space == "vitem"
        DB[id] = {"id": id, "version": 1, "price": 1.0}
        if plan["prefill"]:
            cache.set(key, DB[id], version=1 if versioned else None)
            if plan["loader"] == "read":
                cache.delete(key)  # a read must miss to load
        gate = GATES[id] = Gate()

        def commit(id: str = id) -> None:
            DB[id] = {"id": id, "version": DB[id]["version"] + 1, "price": DB[id]["price"] + 1}

        def invalidate(plan: dict[str, Any] = plan, key: str = key, tag: str = tag, id: str = id,
                       versioned: bool = versioned, n: int = n) -> None:
            writer = plan["writer"]
            version = DB[id]["version"]
            if writer == "set":
                cache.set(key, DB[id], version=version if versioned else None)
                return
            ev = (Event(f"0-{n}", "tag", tag) if writer == "tag"
                  else Event(f"0-{n}", "key", key, version if writer == "event_version" else None))
            applied = apply_events(redis_client, [ev], layout=layout, fence_ttl=settings.fence_ttl)
            assert set(applied.outcomes.values()) <= {"applied", "stale"}, applied.errors

        actions: dict[int, list[Callable[[], None]]] = {s: [] for s in range(4)}
        actions[plan["commit_slot"]].append(commit)
        actions[plan["apply_slot"]].append(invalidate)
        if plan["replay_slot"] is not None:  # at-least-once: the same event delivered again, later
            actions[max(plan["replay_slot"], plan["apply_slot"])].append(invalidate)

        def load(key: str = key, tag: str = tag, versioned: bool = versioned, kind: str = plan["loader"]) -> None:
            if kind == "read":
                cache.get(key)
            else:
                _refresh(redis_client, settings, layout, key, tag, versioned)

        loader = threading.Thread(target=load)
        for act in actions[0]:
            act()
        loader.start()
        while not gate.entered.wait(0.005) and loader.is_alive():
            pass  # a read that hits (the writer's set came first) never enters the source
        for act in actions[1]:
            act()
        gate.may_read.set()
        while not gate.read.wait(0.005) and loader.is_alive():
            pass
        for act in actions[2]:
            act()
        gate.may_return.set()
        loader.join(10)
        assert not loader.is_alive()
        for act in actions[3]:
            act()
        del GATES[id]

        raw = redis_client.get(layout.value(key))
        cached = envelope.decode(raw).value if raw is not None else None
        if cached is not None and cached != DB[id]:
            stale.append(f"round {n} {plan}: cached {cached} but the source has {DB[id]}")
        if cache.get(key) != DB[id]:
            stale.append(f"round {n} {plan}: a read after quiescence returned an old value")
    assert stale == [], f"{len(stale)} of {ROUNDS} rounds stale:\n" + "\n".join(stale[:10])


@pytest.fixture(autouse=True)
def _clean_tables() -> None:
    DB.clear()
    GATES.clear()
