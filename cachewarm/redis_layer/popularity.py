"""Reading a key's popularity: the forward-decayed read count kept in ``hot:S`` (written by the read path's FLUSH,
read/access.py), and the one rule of what is hot.

A read at time t adds 2^((t - epoch) / half_life) to the key's score, so dividing a score by `decay_scale` at
`now` gives the number of reads, each halved per half-life since it happened. The Lua scripts that need the same
figure (FLUSH, HOTSET, HOT_MEMBERS) compute it in Lua from the same `half_life_ms`.

Hot means decayed reads strictly above the threshold (``CACHEWARM_HOT_THRESHOLD``: "decayed reads above which a
key counts as hot") at Redis's clock, never a process's: `hot_bound` / `is_hot` here, and their Lua twins in
lua/preamble.lua. The scan (HOTSET), the invalidation consumer's hand-off of hot keys (HOT_MEMBERS) and the
``cachewarm_hot_keys`` gauge (metrics/cluster.py, a ZCOUNT above `hot_bound`) all judge by it.
"""

from __future__ import annotations


def half_life_ms(half_life: float) -> int:
    """The half-life (seconds) in whole milliseconds, at least 1: the unit the scripts are given."""
    return max(1, int(half_life * 1000))


def decay_scale(now_ms: float, epoch_ms: float, half_life: float) -> float:
    """What a read at `now_ms` adds to a score relative to `epoch_ms`; scores divided by it are decayed reads."""
    return float(2.0 ** ((now_ms - epoch_ms) / half_life_ms(half_life)))


def decayed_reads(score: float, now_ms: float, epoch_ms: float | None, half_life: float) -> float:
    """The decayed read count of a score (a score with no epoch yet is taken as counted at the epoch)."""
    return score if epoch_ms is None else score / decay_scale(now_ms, epoch_ms, half_life)


def hot_bound(threshold: float, now_ms: float, epoch_ms: float, half_life: float) -> float:
    """The score of a hot-set shard (epoch `epoch_ms`) above which a member is hot at `now_ms` (Redis's clock).
    Lua twin: ``hot_bound`` in lua/preamble.lua."""
    return threshold * decay_scale(now_ms, epoch_ms, half_life)


def is_hot(score: float | None, bound: float) -> bool:
    """Whether a member's score (None: not a member) makes it hot: strictly above `hot_bound`. Lua twin: ``is_hot``
    in lua/preamble.lua."""
    return score is not None and score > bound
