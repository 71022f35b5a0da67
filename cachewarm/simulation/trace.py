"""The trace format: one read per line, ``<milliseconds> <key>``, plain text or gzip (a name ending in ``.gz``).

Any access log can feed the simulator once cut to these two fields: the time of the read in milliseconds (any
origin: Unix time or since the start; integer or decimal) and the key, separated by one space (the key is the rest
of the line, so it may itself hold spaces). Blank lines and lines starting with ``#`` are comments, except the
header ``cachewarm trace`` writes first::

    # cachewarm-trace sample=0.125 latency.product=0.051

``sample`` is the share of keys the trace holds (every read of each): `sampled` picks keys by a hash of the key
(read/tracing.py: CRC-32, the same rule in every process, so a key is in or out for the whole recording); the
simulator scales the sample back up (source requests / share, a budget * share per sampled keyspace).
``latency.KEYSPACE`` is the source latency the refreshes measured when it was recorded, the simulator's miss cost
unless told otherwise.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..errors import ConfigError
from ..read.tracing import sampled

__all__ = ["HEADER", "Trace", "TraceError", "TraceInfo", "parse", "read_trace", "sampled", "write_lines"]

HEADER = "# cachewarm-trace"


class TraceError(ConfigError):
    """A trace file that cannot be read: names the file, the line and what is wrong."""


@dataclass
class TraceInfo:
    """What a trace's header says."""

    sample: float = 1.0
    latency: dict[str, float] = field(default_factory=dict)

    def header(self) -> str:
        parts = [HEADER, f"sample={self.sample:g}"]
        parts += [f"latency.{name}={value:.6g}" for name, value in sorted(self.latency.items())]
        return " ".join(parts)


def _parse_header(line: str, where: str) -> TraceInfo:
    info = TraceInfo()
    for part in line[len(HEADER):].split():
        name, sep, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or number != number:
            raise TraceError(f"{where}: header field {part!r} is not NAME=NUMBER")
        if name == "sample":
            if not 0 < number <= 1:
                raise TraceError(f"{where}: sample={value} must be in (0, 1]")
            info.sample = number
        elif name.startswith("latency."):
            info.latency[name.removeprefix("latency.")] = number
    return info


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="surrogateescape")
    return path.open("r", encoding="utf-8", errors="surrogateescape")


@dataclass
class Trace:
    """A trace in memory: reads as (seconds, key), in time order, and the header's figures."""

    reads: list[tuple[float, str]]
    info: TraceInfo

    @property
    def seconds(self) -> float:
        return self.reads[-1][0] - self.reads[0][0] if len(self.reads) > 1 else 0.0


def parse(lines: Iterable[str], where: str = "trace") -> Trace:
    """Reads trace lines; raises TraceError naming the line of the first malformed one. Reads out of time order
    are sorted (logs from several processes interleave), and times start at 0."""
    info = TraceInfo()
    reads: list[tuple[float, str]] = []
    ordered = True
    last = float("-inf")
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if line.startswith("#"):
            if line.startswith(HEADER):
                info = _parse_header(line, f"{where}:{number}")
            continue
        stamp, sep, key = line.partition(" ")
        try:
            ms = float(stamp)
        except ValueError:
            ms = float("nan")
        if ms != ms or ms in (float("inf"), float("-inf")):
            raise TraceError(f"{where}:{number}: {line[:80]!r} does not start with milliseconds "
                             "(expected '<milliseconds> <key>')")
        if not sep or not key:
            raise TraceError(f"{where}:{number}: {line[:80]!r} has no key (expected '<milliseconds> <key>')")
        ordered = ordered and ms >= last
        last = ms
        reads.append((ms, key))
    if not reads:
        raise TraceError(f"{where}: no reads (expected lines '<milliseconds> <key>')")
    if not ordered:
        reads.sort(key=lambda read: read[0])
    start = reads[0][0]
    return Trace([((ms - start) / 1000, key) for ms, key in reads], info)


def read_trace(path: Path | str) -> Trace:
    path = Path(path)
    try:
        with _open(path) as handle:
            return parse(handle, str(path))
    except OSError as exc:  # missing, a directory, not gzip
        raise TraceError(f"{path}: cannot read the trace: {exc.strerror or exc}") from None
    except EOFError:
        raise TraceError(f"{path}: the gzip file is truncated") from None


def write_lines(info: TraceInfo, reads: Iterable[tuple[float, str]]) -> Iterator[str]:
    """The lines of a trace: the header, then ``<milliseconds> <key>`` (reads given as (milliseconds, key))."""
    yield info.header() + "\n"
    for ms, key in reads:
        yield f"{ms:.0f} {key}\n"


def open_for_writing(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "wb"), encoding="utf-8", errors="surrogateescape")
    return path.open("w", encoding="utf-8", errors="surrogateescape")
