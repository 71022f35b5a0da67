"""A bounded memo whose eviction is gradual and costs a hit nothing: two generations approximating LRU.

The current generation (`current`, a plain dict that a hot path may read directly: one lookup, no call) and the
previous one. A miss looks in the previous generation before deriving the value and moves what it finds into the
current one; when the current one holds half the bound it becomes the previous one, and what the previous one still
held (keys nobody asked for during a whole generation) is dropped. So a key asked for within the last bound/2 new
keys is never derived again, and nothing is ever dropped all at once. An OrderedDict's move_to_end on every hit
would be exact LRU, at a cost on every hit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TwoGenerationMemo(Generic[K, V]):
    """At most `bound` values, the least recently asked for dropped first (by generations of bound/2)."""

    __slots__ = ("_generation", "_previous", "current")

    def __init__(self, bound: int) -> None:
        # Readers may hold `current`: it is cleared in place, never replaced.
        self.current: dict[K, V] = {}
        self._previous: dict[K, V] = {}
        self._generation = max(1, bound // 2)

    def __len__(self) -> int:
        return len(self.current) + len(self._previous)

    def __contains__(self, key: K) -> bool:
        return key in self.current or key in self._previous

    def get(self, key: K, derive: Callable[[K], V]) -> V:
        """The value of key, derived (by `derive`) only when neither generation holds it."""
        try:
            return self.current[key]
        except KeyError:
            pass
        try:
            value = self._previous.pop(key)
        except KeyError:
            value = derive(key)
        current = self.current
        if len(current) >= self._generation:
            self._previous = current.copy()
            current.clear()
        current[key] = value
        return value
