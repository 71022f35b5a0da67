"""Worker heartbeats: ``workers:<id>`` keys that live a few seconds and are renewed every second.

A refresh lease carries its worker's id (``w=<id>|<token>``); when that worker's heartbeat is gone (a kill -9,
an OOM kill) another worker may take the lease at once instead of waiting out its TTL. Only the key's existence
matters to the leases; its value says who is beating, for `cachewarm status`: a small JSON object naming the
Celery node (the "host": ``-n name@host``, several may share a machine), the pid, the process's role and its
refresh batches in flight. Each refreshing process beats (its refresh engine), and each node's sidecar beats for
the node as a whole (naming the worker's main process and its children), so an idle node is listed too. How
long ago a process last beat comes from the key's PTTL, not from any host's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

from ..redis_layer.connections import sync_client
from ..redis_layer.keys import KeyLayout
from ..settings import Settings

TTL_MS = 3000
INTERVAL = 1.0
# The sidecar step passes its node's name to the sidecar (a separate program) in this variable.
NODE_ENV = "CACHEWARM_NODE_NAME"
MAX_LISTED = 10_000


def worker_id() -> str:
    """This process's id: host and pid (a forked pool child gets its own)."""
    return f"{socket.gethostname()}.{os.getpid()}"


def node_name() -> str:
    """The Celery node this process works for: a prefork pool child's (set by Celery in the child), the
    sidecar's (from its step, NODE_ENV), else the machine's name (`cachewarm warm`, a test)."""
    prefork = sys.modules.get("celery.concurrency.prefork")
    name = getattr(prefork, "_process_hostname", None) if prefork is not None else None
    return str(name or os.environ.get(NODE_ENV) or socket.gethostname())


def _role() -> str:
    prefork = sys.modules.get("celery.concurrency.prefork")
    if prefork is not None and getattr(prefork, "_process_hostname", None):
        return "pool"
    return "sidecar" if os.environ.get(NODE_ENV) else "process"


def beat_value(*, role: str, in_flight: int | None = None, **extra: Any) -> str:
    return json.dumps({"node": node_name(), "pid": os.getpid(), "role": role, "in_flight": in_flight, **extra},
                      separators=(",", ":"))


async def beat_forever(client: redis.asyncio.Redis, layout: KeyLayout, ident: str, interval: float = INTERVAL,
                       *, in_flight: Callable[[], int] | None = None) -> None:
    """Renews the heartbeat until cancelled; Redis errors are retried on the next beat."""
    key = layout.worker(ident)
    role = _role()
    try:
        while True:
            value = beat_value(role=role, in_flight=in_flight() if in_flight is not None else None)
            with contextlib.suppress(redis.RedisError):
                await client.set(key, value, px=TTL_MS)
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(redis.RedisError, RuntimeError):
            await client.delete(key)


def children(pid: int) -> list[int]:
    """The child processes of `pid` (a worker's pool, its sidecar, an embedded beat), where Linux tells them
    (``/proc/PID/task/PID/children``); [] elsewhere."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(item) for item in text.split() if item.isdigit()]


class NodeBeat:
    """The node's own heartbeat, renewed by its sidecar's main loop (one SET a second): the node is listed by
    `cachewarm status` from its start, before any of its processes refreshed anything."""

    def __init__(self, client: redis.Redis, layout: KeyLayout, worker_pid: int) -> None:
        self.client = client
        self.key = layout.worker(f"{worker_id()}.node")
        self.worker_pid = worker_pid

    @classmethod
    def for_settings(cls, settings: Settings, worker_pid: int) -> NodeBeat:
        return cls(sync_client(settings.redis_url, timeout=max(settings.redis_timeout, 1.0),
                               cluster=settings.redis_cluster),
                   KeyLayout(settings.key_prefix), worker_pid)

    def beat(self) -> None:
        value = beat_value(role="node", worker=self.worker_pid, children=children(self.worker_pid))
        with contextlib.suppress(redis.RedisError):
            self.client.set(self.key, value, px=TTL_MS)

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.client.delete(self.key)
        self.client.close()


def live_workers(client: redis.Redis, layout: KeyLayout) -> list[str]:
    """Ids of the workers whose heartbeat is current."""
    start = len(layout.worker(""))
    return sorted(k.decode()[start:] for k in client.scan_iter(match=layout.worker("*"), count=1000))


@dataclass
class Heartbeat:
    """One live heartbeat key: who beats, and how long ago it last did."""

    ident: str
    node: str
    pid: int | None
    role: str
    in_flight: int | None
    age: float  # seconds since the last beat
    extra: dict[str, Any]


def _parse(ident: str, raw: bytes | None, pttl: int) -> Heartbeat | None:
    if raw is None or pttl < 0:  # gone (or never to expire: not a heartbeat)
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):  # an older worker's value: its pid only
        host, _, pid = ident.rpartition(".")
        data = {"node": host or ident, "pid": int(pid) if pid.isdigit() else None, "role": "process"}
    known = {"node", "pid", "role", "in_flight"}
    in_flight = data.get("in_flight")
    return Heartbeat(ident, str(data.get("node", ident)), data.get("pid"), str(data.get("role", "process")),
                     in_flight if isinstance(in_flight, int) else None, max(0.0, (TTL_MS - pttl) / 1000),
                     {k: v for k, v in data.items() if k not in known})


def read_heartbeats(client: redis.Redis, layout: KeyLayout, limit: int = MAX_LISTED) -> list[Heartbeat]:
    """The live heartbeats (at most `limit`): one SCAN, then one pipeline of GET and PTTL."""
    idents = live_workers(client, layout)[:limit]
    pipe = client.pipeline(transaction=False)
    for ident in idents:
        pipe.get(layout.worker(ident))
        pipe.pttl(layout.worker(ident))
    results = pipe.execute() if idents else []
    beats = (_parse(ident, results[2 * i], results[2 * i + 1]) for i, ident in enumerate(idents))
    return [beat for beat in beats if beat is not None]
