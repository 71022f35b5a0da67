"""Reading a key's popularity: the forward-decayed read count kept in ``hot:S`` (written by access.py's FLUSH).

A read at time t adds 2^((t - epoch) / half_life) to the key's score, so dividing a score by `decay_scale` at
`now` gives the number of reads, each halved per half-life since it happened. The Lua scripts that need the same
figure (FLUSH, HOTSET) compute it in Lua from the same `half_life_ms`.
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
