"""Trace recording: while ``cachewarm trace`` runs, every process's read recorder (access.py) also sends the reads
of a sampled share of keys, with their times, for the command to write as a trace (simulation/trace.py).

Keys (under the prefix):
- ``trace:on``: the sample share (a decimal in (0, 1]) while a recording is on; set by ``cachewarm trace`` with a
  TTL of its duration, so a recording whose command died turns itself off.
- ``trace:reads``: a list of ``<milliseconds> <key>`` lines, RPUSHed by each process's flush (every
  ``stats_flush_interval``) and LPOPed by the command; trimmed to the newest MAX_LINES and given READS_TTL at every
  push, so lines nobody drains go away.

Cost: a read appends one tuple to the recorder's deque as before; only while a recording is on does it also take
the time (time.time) and append (time, key) to a second deque. Whether one is on is asked by the flush thread, in
its pipeline (a GET of ``trace:on``): no read pays a round trip. Keys are sampled by a hash of the key (CRC-32), in
the flush thread: a sampled key has all of its reads in the trace, the others none.
"""

from __future__ import annotations

import zlib

TRACE_ON = "trace:on"
TRACE_READS = "trace:reads"
MAX_LINES = 2_000_000
READS_TTL = 60
SAMPLE_SPACE = 2**32


def sampled(key: str, share: float) -> bool:
    """Whether `key` is in a recording of `share` of the keys (the same answer in every process)."""
    if share >= 1:
        return True
    return zlib.crc32(key.encode("utf-8", "surrogateescape")) < share * SAMPLE_SPACE


def parse_share(raw: bytes | str | None) -> float | None:
    """The share ``trace:on`` holds, or None (off, or not a share in (0, 1])."""
    if raw is None:
        return None
    try:
        share = float(raw)
    except ValueError:
        return None
    return share if 0 < share <= 1 else None


def lines(traced: list[tuple[float, str]], share: float) -> list[str]:
    """The trace lines of the buffered (seconds, key) reads of sampled keys."""
    memo: dict[str, bool] = {}
    out: list[str] = []
    for t, key in traced:
        keep = memo.get(key)
        if keep is None:
            keep = memo[key] = sampled(key, share)
        if keep:
            out.append(f"{int(t * 1000)} {key}")
    return out
