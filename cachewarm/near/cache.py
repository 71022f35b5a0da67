"""The near cache of one client: the local stores of its `local = true` keyspaces, kept honest by a tracking link.

The rule it keeps: a local copy is served only while the link is healthy, and every push Redis sent before a read
began has been applied before that read is answered (link.py drains the socket first). The one race left is the
copy itself: a read that took its value from Redis may be answered by Redis before a change that Redis pushes to us
while the read is still on its way; so a read takes a ticket before it asks Redis, and its value is kept only if no
push for its key (and no reset) was applied since the ticket.

Entries are keyed by the value's Redis key (the name Redis pushes). One lock serialises the link and the stores:
the sync client's threads share them; the async client takes it too (never across an await).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import redis

from ..config.keyspaces import KeyspaceRegistry
from ..redis_layer import sentinel
from ..redis_layer.keys import KeyLayout
from ..settings import Settings
from . import topology
from .link import ServerAddress, TrackingLink
from .store import LocalEntry, LocalStore

log = logging.getLogger("cachewarm.near")
_live: weakref.WeakSet[NearCache] = weakref.WeakSet()


def live_near_caches() -> list[NearCache]:
    """This process's near caches that are still open (metrics read their figures at scrape time)."""
    return [near for near in list(_live) if not near.closed]


def _after_fork_in_child() -> None:
    # A forked child (a prefork worker, a web server's worker) must not read its parent's tracking socket: the
    # pushes would be split between them. It starts with no copies and opens its own link on its first read.
    for near in list(_live):
        near._start_afresh()


_fork_handler = threading.Lock()
_fork_handler_set = False


def _handle_forks() -> None:
    # Registered by the first near cache, not at import: importing cachewarm registers nothing.
    global _fork_handler_set
    with _fork_handler:
        if not _fork_handler_set:
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_handler_set = True


@dataclass(frozen=True, slots=True)
class LocalBounds:
    """How much one keyspace may keep in one process."""

    max_entries: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class Ticket:
    """Taken before a read asks Redis; a value is kept only if nothing changed its key since."""

    epoch: int
    seq: int


class NearCache:
    """Local stores per keyspace label, the tracking links (one per Redis server: one, or a cluster's masters),
    and the tickets of reads on their way."""

    def __init__(self, redis_url: str, bounds: dict[str, tuple[str, LocalBounds]], *, cluster: bool = False,
                 ping_interval: float = 0.1, lag_limit: float = 0.25, connect_timeout: float = 0.5,
                 retry_interval: float = 1.0) -> None:
        """bounds: keyspace label -> (the Redis key prefix of its values, its bounds). cluster: redis_url names a
        node of a Redis Cluster; a redis+sentinel:// URL follows the master (near/topology.py)."""
        self._lock = threading.Lock()
        self.closed = False
        self.stores = {label: LocalStore(b.max_entries, b.max_bytes) for label, (_, b) in bounds.items()}
        self._epoch = 0
        self._seq = 0
        self._inflight: dict[str, int] = {}
        self._changed: dict[str, int] = {}
        self.hits = dict.fromkeys(self.stores, 0)
        self.misses = dict.fromkeys(self.stores, 0)
        self._prefixes = [prefix for prefix, _ in bounds.values()]
        self._timing = {"ping_interval": ping_interval, "lag_limit": lag_limit, "connect_timeout": connect_timeout,
                        "retry_interval": retry_interval}
        self._discover: topology.Discovery | None = None  # None: one fixed server
        if sentinel.is_sentinel_url(redis_url):
            self._discover = topology.sentinel_discovery(redis_url, connect_timeout)
        elif cluster:
            self._discover = topology.cluster_discovery(ServerAddress.from_url(redis_url), connect_timeout)
        self._next_discovery = 0.0
        self._retired = {"resets": 0, "invalidations": 0}  # figures of links closed by a rediscovery
        self.links = [] if self._discover else [self._link(ServerAddress.from_url(redis_url))]
        _live.add(self)
        _handle_forks()

    @property
    def link(self) -> TrackingLink:
        """The first link (the only one on a single Redis)."""
        return self.links[0]

    def _link(self, address: ServerAddress, health: topology.Health | None = None) -> TrackingLink:
        return TrackingLink(address, self._prefixes, on_keys=self._changed_keys, on_reset=self._reset,
                            health=health, **self._timing)

    def _healthy(self) -> bool:
        """Every link drained and tended (under the lock); True when copies may be served and kept."""
        links = self.links
        if self._discover is None:
            return links[0].check()
        if not links or any(link.refused or link.disconnected for link in links):  # layout changed, or a node died
            return self._rediscover()
        healthy = True
        for link in links:  # every link, even after an unhealthy one: each must drain its pushes
            healthy = link.check() and healthy
        return healthy

    def _rediscover(self) -> bool:
        # A layout that changed (or is not known yet): new links to the servers it has now.
        now = time.monotonic()
        if now < self._next_discovery:
            return False
        self._next_discovery = now + self._timing["retry_interval"]
        for link in self.links:
            link.close()
            self._retired["resets"] += link.resets + 1
            self._retired["invalidations"] += link.invalidations
        self.links = []
        self._reset()
        assert self._discover is not None
        try:
            servers, health = self._discover()
        except redis.RedisError as exc:
            log.warning("near cache: where to track is not known (%s); reading from redis", exc)
            return False
        self.links = [self._link(address, health) for address in servers]
        return all([link.check() for link in self.links])

    # ---- reads ----------------------------------------------------------------------------------------------
    def serve(self, label: str, value_key: str) -> LocalEntry | None:
        """The local copy of value_key when one may be served now."""
        with self._lock:
            if not self._healthy():
                return None
            entry = self.stores[label].get(value_key, time.time() * 1000)
            if entry is None:
                self.misses[label] += 1
                return None
            self.hits[label] += 1
            return entry

    def ticket(self, value_key: str) -> Ticket:
        """Call before asking Redis for value_key; hand the ticket to keep(), and release() it in any case."""
        with self._lock:
            self._inflight[value_key] = self._inflight.get(value_key, 0) + 1
            return Ticket(self._epoch, self._seq)

    def keep(self, label: str, value_key: str, ticket: Ticket, value: Any, *, fetched_ms: int, expires_ms: int,
             raw_size: int) -> bool:
        """Keeps the value read under ticket, unless its key changed (or the link reset) since; True when kept."""
        with self._lock:
            healthy = self._healthy()
            if not healthy or self._changed.get(value_key, -1) > ticket.seq or ticket.epoch != self._epoch:
                return False
            return self.stores[label].put(value_key, value, fetched_ms=fetched_ms, expires_ms=expires_ms,
                                          raw_size=raw_size)

    def release(self, value_key: str) -> None:
        """The read that took a ticket for value_key is over (whether it kept a value or not)."""
        with self._lock:
            self._end(value_key)

    def forget(self, value_key: str) -> None:
        """This process changed value_key itself: its copy goes now (Redis's push follows)."""
        with self._lock:
            for store in self.stores.values():
                store.drop(value_key)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            for link in self.links:
                link.close()
            self._reset()

    # ---- figures for metrics and status ------------------------------------------------------------------------
    def figures(self) -> dict[str, dict[str, int]]:
        """Per label: hits, misses, evictions, entries, bytes; plus the link's resets and invalidations."""
        with self._lock:
            out = {label: {"hits": self.hits[label], "misses": self.misses[label], "evictions": store.evictions,
                           "entries": len(store), "bytes": store.bytes} for label, store in self.stores.items()}
            out["_link"] = {
                "resets": self._retired["resets"] + sum(link.resets for link in self.links),
                "invalidations": self._retired["invalidations"] + sum(link.invalidations for link in self.links),
                "healthy": int(bool(self.links) and all(link.healthy for link in self.links))}
            return out

    def _start_afresh(self) -> None:
        self._lock = threading.Lock()  # it may have been held by another thread of the parent at the fork
        for link in self.links:
            link.forget_connection()
        self._inflight.clear()
        self._changed.clear()
        self._reset()

    # ---- called by the link, under the lock ----------------------------------------------------------------------
    def _changed_keys(self, keys: list[bytes]) -> None:
        self._seq += 1
        for raw in keys:
            key = raw.decode("utf-8", "replace")
            for store in self.stores.values():
                store.drop(key)
            if key in self._inflight:
                self._changed[key] = self._seq

    def _reset(self) -> None:
        self._epoch += 1
        for store in self.stores.values():
            store.clear()

    def _end(self, value_key: str) -> None:
        left = self._inflight.get(value_key, 0) - 1
        if left > 0:
            self._inflight[value_key] = left
        else:
            self._inflight.pop(value_key, None)
            self._changed.pop(value_key, None)


def value_prefix(layout: KeyLayout, pattern: str) -> str:
    """The Redis key prefix every value of a keyspace starts with: its value key up to the pattern's first
    placeholder (whatever the layout wraps around a key)."""
    marker = "\x00"
    value_key = layout.value(pattern.split("{", 1)[0] + marker)
    return value_key[:value_key.index(marker)]


def near_cache_for(settings: Settings, keyspaces: KeyspaceRegistry, layout: KeyLayout) -> NearCache | None:
    """The near cache of a client whose keyspaces ask for one (`local = true`); None when none does."""
    bounds = {ks.name: (value_prefix(layout, ks.config.pattern),
                        LocalBounds(ks.config.local_max_entries, ks.config.local_max_bytes))
              for ks in keyspaces if ks.config.local}
    if not bounds:
        return None
    try:
        if not sentinel.is_sentinel_url(settings.redis_url):
            ServerAddress.from_url(settings.redis_url)
    except ValueError as exc:
        log.warning("near cache off (%s): local keyspaces read from redis", exc)
        return None
    return NearCache(settings.redis_url, bounds, cluster=bool(getattr(settings, "redis_cluster", False)),
                     ping_interval=settings.near_ping_interval,
                     lag_limit=settings.near_lag_limit, connect_timeout=settings.redis_timeout * 2)
