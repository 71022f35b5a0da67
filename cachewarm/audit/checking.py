"""One comparison of a cached value with its source.

The cached value is read whole (GET of ``v:{K}``, the envelope) and kept as read: "the cache still holds the same
value" means the same bytes, its fetch time included, so a value loaded again in the meantime (even an equal
one) is a different value. A keyspace with a ``version_field`` is compared by version (the source's newer than
the cache's: stale; older: a lagging source replica, not the cache's fault); any other by content (JSON equality).
"No such item" on either side is a value like any other: a value the source deleted is stale, and so is a
remembered 404 of an item that now exists.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
import redis

from ..config.sources import Fetched, Source
from ..redis_layer import envelope
from ..redis_layer.envelope import Entry
from ..redis_layer.keys import KeyLayout


@dataclass(frozen=True, slots=True)
class Cached:
    """A cached value as the auditor read it: its bytes and their decoding."""

    raw: bytes
    entry: Entry

    def served(self, now_ms: int) -> bool:
        """Whether a reader gets it now (an expired value is only served when the source fails)."""
        return self.entry.expires_ms > now_ms


def read_cached(client: redis.Redis, layout: KeyLayout, key: str) -> Cached | None:
    """The key's cached value, or None; raises redis.RedisError."""
    raw = client.get(layout.value(key))
    if raw is None:
        return None
    assert isinstance(raw, bytes)
    return Cached(raw, envelope.decode(raw))


USER_AGENT = "cachewarm-audit"  # the auditor's requests say so: a source can tell them apart (and the tests do)


def http_client() -> httpx.Client:
    """The auditor's HTTP client for sources."""
    return httpx.Client(headers={"User-Agent": USER_AGENT})


def now_ms() -> int:
    return int(time.time() * 1000)


def fetch(source: Source, params: Mapping[str, str], http: httpx.Client) -> Fetched:
    """The source's current value; raises SourceError."""
    return source.fetch_sync(params, http)


def stale(cached: Entry, fetched: Fetched, *, versioned: bool) -> bool:
    """Whether the source holds something newer than (versioned) or different from the cached value."""
    if versioned and cached.version is not None and fetched.version is not None:
        return fetched.version > cached.version
    if cached.found != fetched.found:
        return True
    return cached.found and cached.value != fetched.value


def same_source(first: Fetched, second: Fetched, *, versioned: bool) -> bool:
    """Whether two answers of the source are the same value (it did not change between them): the same version
    when versioned (the rest of a body may hold what changes per request: a timestamp), else equal content."""
    if versioned and first.version is not None and second.version is not None:
        return first.version == second.version
    return first.found == second.found and first.value == second.value
