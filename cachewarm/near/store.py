"""The near cache's memory: a bounded copy of values read from Redis, least recently used first out.

An entry holds the decoded value (shared by every read that is served it: treat it as read-only, as with
functools.lru_cache), when it was fetched from the source and when it stops being fresh (the envelope's expiry): an
entry is never served at or past that instant. The store is bounded by entries and by bytes (the size of the value
as Redis held it, plus a fixed overhead per entry, which is an estimate: bench/near_cache.py measures the real
cost). It knows nothing of Redis: the tracking link (link.py) decides what may be stored and drops what Redis
replaced.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

ENTRY_OVERHEAD = 200  # bytes per entry besides the value: the key, the entry object and the dict slot (measured)


@dataclass(frozen=True, slots=True)
class LocalEntry:
    value: Any
    fetched_ms: int
    expires_ms: int
    size: int


class LocalStore:
    """Key -> LocalEntry, at most `max_entries` entries and `max_bytes` bytes; the least recently used go first."""

    __slots__ = ("_entries", "bytes", "evictions", "max_bytes", "max_entries")

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a local store needs room for at least one entry and one byte")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, LocalEntry] = OrderedDict()
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str, now_ms: float) -> LocalEntry | None:
        """The entry of key while it is fresh at now_ms; an expired one is dropped."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_ms <= now_ms:
            self.drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, value: Any, *, fetched_ms: int, expires_ms: int, raw_size: int) -> bool:
        """Keeps a copy; False (nothing kept) when the value alone exceeds the byte bound."""
        size = raw_size + len(key) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            self.drop(key)
            return False
        self.drop(key)
        self._entries[key] = LocalEntry(value, fetched_ms, expires_ms, size)
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.size
            self.evictions += 1
        return True

    def drop(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self.bytes -= entry.size
        return True

    def clear(self) -> int:
        """Drops every entry; returns how many there were."""
        count = len(self._entries)
        self._entries.clear()
        self.bytes = 0
        return count
