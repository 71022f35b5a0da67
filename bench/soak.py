"""Soak: does every process of a `cachewarm run` tree stay flat in memory under a drifting key population?

Starts a private redis-server, the demo source (cachewarm/demo/) and `cachewarm run`, plus a reader process whose
threads read through a `Cache` with a Zipf load whose popular keys drift: every `--period` seconds the ranks move
to `--new-keys` fresh keys (TTL `--ttl`, so expiries, refreshes and new hot keys never stop). Every `--sample`
seconds it reads the RSS (/proc/PID/status VmRSS) of every process of the tree, named: run (the `cachewarm run`
command), main (Celery's main process), ForkPoolWorker-N, beat, sidecar, readers. At the end it prints RSS per
process at 5, 15, 30 and 60 minutes (those the run reaches, and its end) and each process's growth per hour after
the first 5 minutes (a least-squares slope over the samples after it). Everything it started is stopped, whatever
happens (process groups, then SIGKILL).

    .venv/bin/python -m bench.soak --minutes 60     # the goal's run
    .venv/bin/python -m bench.soak --minutes 2      # a smoke run (warm-up: a quarter of a run under 20 minutes)
    .venv/bin/python -m bench.soak --minutes 60 --tracemalloc   # and name what grows, per process

With --tracemalloc every process of the tree traces its allocations (bench/soak_tracemalloc.py: started by a
sitecustomize.py, no thread) and dumps a snapshot on a signal, before the growth window opens (at 0.8 of the
warm-up, 4 minutes into a 60-minute run: a snapshot builds an object per traced block, tens of MB that the process
keeps as free heap, so that jump must land before the window) and after the last sample; the report then lists
each process's top growing lines. Tracing slows allocation and adds its tables to the RSS: compare runs alike.

Goal (issue 17): over 60 minutes, every process grows at most 5 MB after its first 5 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cachewarm.demo.redis_server import RedisServer, free_port
from cachewarm.demo.source_process import SourceProcess

from . import soak_tracemalloc
from .common import print_table

CHECKPOINTS_MIN = (5, 15, 30, 60)
WARMUP_MIN = 5.0


def reader_main(args: argparse.Namespace) -> None:
    """The readers (a process of their own): threads of Zipf reads over keys that drift every `period` s."""
    import random
    import threading

    from cachewarm import Cache

    from .common import ZipfSampler

    cache = Cache()
    sampler = ZipfSampler(args.new_keys, 1.1)
    started = time.monotonic()
    stop = threading.Event()

    def read(index: int) -> None:
        mine = sampler.fork(index)
        rng = random.Random(index)
        while not stop.is_set():
            period = int((time.monotonic() - started) // args.period)
            # Ranks map to a fresh block of ids each period; a shuffle-free offset keeps the id space growing.
            key = f"product:{period * args.new_keys + mine.sample()}"
            with contextlib.suppress(Exception):
                cache.get(key)
            if rng.random() < 0.01:
                time.sleep(0.001)

    threads = [threading.Thread(target=read, args=(i + 1,), daemon=True) for i in range(args.threads)]
    for thread in threads:
        thread.start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.is_set():
        stop.wait(0.5)
    cache.close()


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _has_pipes(pid: int) -> bool:
    """Pool children talk to the main process over pipes; the embedded beat has none."""
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:"):
                    return True
    return False


class Names:
    """Names the processes of the tree; a PID keeps the name it was first given (a replaced pool child is new).
    Celery's forked children share one command line: the pool's have pipes to the main process, the beat none."""

    def __init__(self, run_pid: int, reader_pid: int) -> None:
        self.names: dict[int, str] = {run_pid: "run", reader_pid: "readers"}
        self.run_pid = run_pid
        self.pool = 0

    def _name(self, pid: int, forked: list[int]) -> None:
        for child in forked:
            if child in self.names:
                continue
            if "cachewarm.worker.sidecar" in _cmdline(child):
                self.names[child] = "sidecar"
            elif _has_pipes(child):
                self.pool += 1
                self.names[child] = f"ForkPoolWorker-{self.pool}"
            else:
                self.names[child] = "beat"

    def current(self) -> dict[str, int]:
        """Name -> PID of every process of the tree named so far."""
        tree = _children()
        found = {name: pid for pid, name in self.names.items() if name in ("run", "readers")}
        for pid in tree.get(self.run_pid, []):
            if "celery" not in _cmdline(pid):
                continue
            self.names.setdefault(pid, "main")
            found["main"] = pid
            forked = sorted(tree.get(pid, []))
            self._name(pid, forked)
            found.update((self.names[c], c) for c in forked if c in self.names)
        return found


def _slope_mb_per_hour(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var * 3600


def _warmup_s(minutes: float) -> float:
    return min(WARMUP_MIN, minutes / 4) * 60


def report(samples: list[tuple[float, dict[str, float]]], minutes: float) -> dict[str, float]:
    """Prints the table; returns each process's RSS growth (MB) after the warm-up."""
    names = sorted({name for _, rss in samples for name in rss}, key=_order)
    warmup = _warmup_s(minutes)
    marks = [m * 60 for m in CHECKPOINTS_MIN if m * 60 < samples[-1][0]] + [samples[-1][0]]
    rows = []
    for mark in marks:
        t, rss = min(samples, key=lambda s: abs(s[0] - mark))
        rows.append([f"{t / 60:.1f} min"] + [f"{rss[n]:.1f}" if n in rss else "-" for n in names])
    growth = []
    for name in names:
        after = [(t, rss[name]) for t, rss in samples if t >= warmup and name in rss]
        slope = _slope_mb_per_hour(after)
        first = after[0][1] if after else None
        delta = after[-1][1] - first if after and first is not None else None
        growth.append((name, slope, delta))
    rows.append([f"MB/hour after {warmup / 60:g} min"]
                + [f"{s:+.1f}" if s is not None else "-" for _, s, _ in growth])
    rows.append([f"MB grown after {warmup / 60:g} min"]
                + [f"{d:+.1f}" if d is not None else "-" for _, _, d in growth])
    total = [sum(rss.values()) for t, rss in samples if t >= warmup]
    print_table(f"RSS (MB) per process, {minutes:g}-minute soak", ["at", *names], rows)
    print(f"tree total: {total[0]:.1f} MB after {warmup / 60:g} min, {max(total):.1f} MB peak, "
          f"{total[-1]:.1f} MB at the end")
    return {name: delta for name, _, delta in growth if delta is not None}


def _order(name: str) -> tuple[int, str]:
    rank = {"run": 0, "main": 1, "beat": 3, "sidecar": 4, "readers": 5}
    return rank.get(name, 2), name


interrupted: list[int] = []


def _interrupt(signum: int, frame: object) -> None:
    interrupted.append(signum)


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the pool children and the sidecar too
    proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--period", type=float, default=20.0, help="seconds between key drifts")
    parser.add_argument("--new-keys", type=int, default=5000, help="fresh keys per period (the Zipf's ranks)")
    parser.add_argument("--ttl", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=4, help="reader threads")
    parser.add_argument("--concurrency", type=int, default=2, help="pool children of the worker")
    parser.add_argument("--latency", type=float, default=0.005, help="source latency (s)")
    parser.add_argument("--json", type=Path, help="also write the samples here")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="trace allocations in every process and print what grew (see above)")
    parser.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        reader_main(args)
        return
    with tempfile.TemporaryDirectory(prefix="cachewarm-soak-") as tmp, RedisServer() as server, \
            SourceProcess(latency=args.latency, items=1 << 40) as source:
        config = Path(tmp) / "cachewarm.toml"
        config.write_text(f'[keyspaces.product]\npattern = "product:{{id}}"\nsource = "{source.url}/products/{{id}}"'
                          f"\nttl = {args.ttl}\nrefresh_ahead = {args.ttl / 3:g}\nmax_stale = 30\n")
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "CACHEWARM_REDIS_URL": server.url(0), "CACHEWARM_BROKER_URL": server.url(1),
               "CACHEWARM_CONFIG": str(config), "CACHEWARM_HOT_HALF_LIFE": str(args.period),
               "CACHEWARM_MAX_TRACKED_KEYS": "3000", "CACHEWARM_SCAN_INTERVAL": "0.5",
               "CACHEWARM_METRICS_PORT": str(free_port()),
               "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        snapshots = Path(tmp) / "snapshots"
        if args.tracemalloc:
            snapshots.mkdir()
            (Path(tmp) / "sitecustomize.py").write_text(soak_tracemalloc.SITECUSTOMIZE)
            env["PYTHONPATH"] = tmp + os.pathsep + env["PYTHONPATH"]
            env[soak_tracemalloc.ENV] = str(snapshots)
        log = open(Path(tmp) / "run.log", "wb")  # noqa: SIM115 - handed to the children
        run = subprocess.Popen([sys.executable, "-c", "from cachewarm.cli import main; main()", "run",
                                "--concurrency", str(args.concurrency), "--loglevel", "WARNING"],
                               env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        readers = subprocess.Popen([sys.executable, "-m", "bench.soak", "--reader", "--period", str(args.period),
                                    "--new-keys", str(args.new_keys), "--threads", str(args.threads)],
                                   env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        names = Names(run.pid, readers.pid)
        # A SIGTERM (or a SIGINT, even when a background shell ignores it) stops the run and still reports.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _interrupt)
        samples: list[tuple[float, dict[str, float]]] = []
        first: dict[str, Path] | None = None if args.tracemalloc else {}
        loads: list[float] = []  # the machine's 1-minute load average at each sample (it is shared)
        last: dict[str, Path] = {}
        started = time.monotonic()
        try:
            while (elapsed := time.monotonic() - started) < args.minutes * 60 and not interrupted:
                if run.poll() is not None or readers.poll() is not None:
                    raise SystemExit(f"a process ended early; see {Path(tmp) / 'run.log'}:\n"
                                     + (Path(tmp) / "run.log").read_text()[-3000:])
                rss = {name: kb / 1024 for name, pid in names.current().items()
                       if (kb := _rss_kb(pid)) is not None}
                samples.append((elapsed, rss))
                loads.append(os.getloadavg()[0])
                print(f"{elapsed / 60:6.1f} min  load {loads[-1]:4.1f}  " + "  ".join(f"{n} {v:.1f}" for n, v in
                                                              sorted(rss.items(), key=lambda kv: _order(kv[0]))),
                      flush=True)
                if first is None and elapsed >= 0.8 * _warmup_s(args.minutes):
                    first = soak_tracemalloc.request(snapshots, names.current())
                time.sleep(args.sample)
            if args.tracemalloc:
                last = soak_tracemalloc.collect(soak_tracemalloc.request(snapshots, names.current()), wait=120)
        finally:
            _stop(readers, 10)
            _stop(run, 40)
        if args.json:
            args.json.write_text(json.dumps(samples))
        grown = report(samples, samples[-1][0] / 60 if interrupted else args.minutes)
        print(f"load average (1 min) over the run: min {min(loads):.1f}, mean {sum(loads) / len(loads):.1f}, "
              f"max {max(loads):.1f} ({os.cpu_count()} CPUs)")
        if args.tracemalloc:
            soak_tracemalloc.report(soak_tracemalloc.collect(first or {}, wait=0), last, grown)


if __name__ == "__main__":
    main()
