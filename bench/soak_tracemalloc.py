"""tracemalloc in every process of a soak's tree (`bench.soak --tracemalloc`): what grows, by source line.

Child side (`install`, run by a sitecustomize.py the soak writes into its temporary directory, which leads
PYTHONPATH): every Python process the soak starts, and every process they start or fork (Celery's main process,
its pool children and beat, the sidecar, the readers), traces its allocations from its first line, and on
SNAPSHOT_SIGNAL dumps a snapshot into the directory named by the environment. Neither starts a thread (Celery's main
process must run none: it forks, see tests/worker/test_fork_safety.py); the snapshot is taken by a signal handler,
in the process's main thread, between two bytecodes.

Soak side (`signal_all`, `report`): signals the processes that catch the signal (a process that does not would be
killed by it: /proc/PID/status SigCgt tells), waits for their snapshots, and prints each process's top growing lines
between its first and its last snapshot, with the growth of tracemalloc's total (Python's allocations) beside the
RSS's (the rest: C libraries, fragmentation, tracemalloc's own tables).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import tracemalloc
from pathlib import Path
from types import FrameType

ENV = "CACHEWARM_SOAK_TRACEMALLOC"          # the directory the snapshots go to
FRAMES = 4                                  # frames kept per traced block: enough to name the caller of a stdlib line
SNAPSHOT_SIGNAL = signal.SIGRTMIN + 3       # used by nothing in the tree (Celery: TERM, INT, QUIT, HUP, USR1, ...)
SITECUSTOMIZE = "from bench.soak_tracemalloc import install\ninstall()\n"

_taken = 0


def install() -> None:
    """Starts tracing and arms the snapshot signal, when the soak asked for it (a no-op otherwise)."""
    if not os.environ.get(ENV):
        return
    tracemalloc.start(FRAMES)
    signal.signal(SNAPSHOT_SIGNAL, _snapshot)


def _snapshot(signum: int, frame: FrameType | None) -> None:
    global _taken
    _taken += 1
    path = Path(os.environ[ENV]) / f"{os.getpid()}.{_taken}"
    snapshot = tracemalloc.take_snapshot()
    snapshot.dump(f"{path}.tmp")
    meta = {"traced": tracemalloc.get_traced_memory()[0], "tables": tracemalloc.get_tracemalloc_memory()}
    Path(f"{path}.json").write_text(json.dumps(meta))
    os.replace(f"{path}.tmp", f"{path}.snap")  # last: the soak waits for this name


# ---- the soak's side --------------------------------------------------------------------------------------------
def catches(pid: int) -> bool:
    """Whether the process has a handler for SNAPSHOT_SIGNAL (SigCgt, a hex mask of signal numbers - 1)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (SNAPSHOT_SIGNAL - 1) & 1)
    return False


def request(where: Path, pids: dict[str, int]) -> dict[str, Path]:
    """Asks every process that can to dump a snapshot; name -> the path its snapshot will have."""
    expected: dict[str, Path] = {}
    for name, pid in pids.items():
        if not catches(pid):
            continue
        taken = len(list(where.glob(f"{pid}.*.snap")))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, SNAPSHOT_SIGNAL)
            expected[name] = where / f"{pid}.{taken + 1}.snap"
    return expected


def collect(expected: dict[str, Path], *, wait: float) -> dict[str, Path]:
    """The snapshots that came in within `wait` seconds."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and not all(p.exists() for p in expected.values()):
        time.sleep(0.5)
    return {name: path for name, path in expected.items() if path.exists()}


_IGNORED = (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__, all_frames=True),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"), tracemalloc.Filter(False, "<unknown>"))


def _where(frame: tracemalloc.Frame) -> str:
    name = frame.filename
    for marker in ("/site-packages/", "/lib/python3.", "/work/main/"):
        if marker in name:
            name = name.split(marker, 1)[1]
            break
    return f"{name}:{frame.lineno}"


def report(first: dict[str, Path], last: dict[str, Path], rss_grown: dict[str, float], *, top: int = 8) -> None:
    """Per process: tracemalloc's total growth and the lines that grew most between the two snapshots."""
    missing = sorted(set(first) ^ set(last))
    if missing:
        print(f"\nno pair of snapshots for: {', '.join(missing)}")
    for name, end in last.items():
        start = first.get(name)
        if start is None:
            continue
        before = tracemalloc.Snapshot.load(str(start)).filter_traces(_IGNORED)
        after = tracemalloc.Snapshot.load(str(end)).filter_traces(_IGNORED)
        meta = [json.loads(Path(str(p).removesuffix(".snap") + ".json").read_text()) for p in (start, end)]
        traced = (meta[1]["traced"] - meta[0]["traced"]) / 2**20
        tables = (meta[1]["tables"] - meta[0]["tables"]) / 2**20
        grown = rss_grown.get(name)
        print(f"\n{name}: traced Python memory {traced:+.2f} MB, tracemalloc's tables {tables:+.2f} MB"
              + (f", RSS {grown:+.1f} MB" if grown is not None else "") + " between the snapshots; top lines:")
        stats = [s for s in after.compare_to(before, "lineno") if s.size_diff]
        stats.sort(key=lambda s: -s.size_diff)
        for stat in stats[:top]:
            print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  {_where(stat.traceback[0])}")
        by_trace = sorted(after.compare_to(before, "traceback"), key=lambda s: -s.size_diff)[:3]
        for stat in by_trace:
            if stat.size_diff > 0:
                chain = " <- ".join(_where(f) for f in reversed(stat.traceback))
                print(f"  {stat.size_diff / 1024:+9.1f} KiB via {chain}")
