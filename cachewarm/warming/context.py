"""What the refreshes of a process share: its clients, key plans, per-keyspace semaphores and pipeline."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field

import redis.asyncio

from ..config.keyspaces import KeyspaceRegistry
from ..config.sources import HttpPool, SourceClient
from ..read.plans import Planner
from ..redis_layer import script_calls, scripts
from ..redis_layer.connections import async_client
from ..redis_layer.keys import KeyLayout
from ..settings import Settings
from .pipeline import FLUSH_WINDOW, Build, Pipeliner


def make_http_client(settings: Settings, *, concurrency: int | None = None) -> HttpPool:
    """The workers' HTTP client for sources: aiohttp's connection pool (each source gives its own timeout)."""
    return HttpPool(max_connections=max(concurrency or settings.refresh_concurrency, 10))


@dataclass
class RefreshContext:
    """What refreshes share for the life of a worker process: clients, plans and per-keyspace semaphores."""

    settings: Settings
    redis: redis.asyncio.Redis
    http: SourceClient     # the workers' sources.HttpPool (make_http_client), or an httpx.AsyncClient
    worker_id: str
    keyspaces: KeyspaceRegistry | None = None
    core: Planner = field(init=False)
    layout: KeyLayout = field(init=False)
    semaphores: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    pipeliner: Pipeliner = field(init=False)
    lease_builds: dict[Hashable, Build] = field(default_factory=dict)
    # Keys' outcomes not yet told to the hooks: one hooks.refresh call per (keyspace, outcome) at a batch's end
    # instead of one per key (a Prometheus label lookup and increment each).
    tally: Counter[tuple[str, str]] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.core = Planner(self.settings, self.keyspaces)
        self.layout = self.core.layout
        self.pipeliner = Pipeliner(self.redis, FLUSH_WINDOW)

    @classmethod
    def open(cls, settings: Settings, worker_id: str, *, timeout: float,
             keyspaces: KeyspaceRegistry | None = None) -> RefreshContext:
        """A context with clients of its own (an async Redis client with `timeout`, the sources' aiohttp pool), as
        a worker's refresh engine and `cachewarm warm` hold one; `aclose` closes them. Made on the loop it serves."""
        client = async_client(settings.redis_url, timeout=timeout, cluster=settings.redis_cluster)
        return cls(settings, client, make_http_client(settings), worker_id, keyspaces)

    async def aclose(self) -> None:
        """Closes the clients (`open`'s, or those it was handed)."""
        await self.http.aclose()
        await self.redis.aclose()

    def build_write(self, items: list[script_calls.WriteItem]) -> scripts.Call[list[script_calls.WriteStatus]]:
        """The refreshes' WRITE of many keys (fenced by their tokens, no bump)."""
        return script_calls.write_many(self.layout, items, fence_ttl=self.settings.fence_ttl)

    def build_seen(self, items: list[tuple[str, str]]) -> scripts.Call[list[bool]]:
        """The refreshes' SEEN of many keys, each (key, keyspace)."""
        return script_calls.seen_many(self.layout, items)

    def concurrency(self, keyspace: str) -> int:
        """Source requests of the keyspace in flight at once in this process."""
        return self.core.keyspaces[keyspace].config.concurrency or self.settings.refresh_concurrency

    def semaphore(self, keyspace: str) -> asyncio.Semaphore:
        sem = self.semaphores.get(keyspace)
        if sem is None:
            sem = self.semaphores[keyspace] = asyncio.Semaphore(self.concurrency(keyspace))
        return sem
