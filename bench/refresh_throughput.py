"""Refresh-throughput benchmark: how fast do the workers refresh a large set of keys that are all due at once?

--keys keys (default 20,000) are pinned and missing, so one scan finds them all due; the source (a child process)
answers after --latency (default 50 ms); refresh concurrency --concurrency (default 100) in total. The physical
limit is concurrency / latency (2,000 keys/s); the goal is 1,500 keys/s end to end through Celery.

Rows, all in this one run against the same redis-server and source:
  floor: aiohttp + SET PX    the least a Python refresher does (issue 12): one asyncio process, aiohttp GET of each
                             key, the answers written by pipelined SET PX; no Celery, no Lua, no fence
  transport: httpx default   refresh_batch in this process over httpx's default transport (no Celery)
  transport: httpx-aiohttp   the same over httpx_aiohttp.AiohttpTransport (what the workers used before issue 12)
  transport: aiohttp pool    the same over sources.HttpPool, aiohttp called directly (what the workers use)
  celery: one task per key   the baseline: every key its own Celery task (threads pool, --concurrency threads),
                             each task running the same refresh path for its one key
  celery: cachewarm batched  `celery -A cachewarm.worker worker -B` (prefork, --processes processes sharing the
                             concurrency, beat scanning every second): the scan claims the due keys and enqueues
                             batches of --batch keys, each process running up to MAX_IN_FLIGHT (tasks/refresh.py)
                             batches at once; measured from the first scan until every key is written
Every row also gives CPU ms per key (see the table's notes). A Celery row that stops short of its keys (no key
refreshed for --stall seconds) fails, naming how many were refreshed, with py-spy dumps of the worker's processes
(if py-spy is installed) and the logs kept; whatever way the bench ends, it leaves no process behind.

    python -m bench.refresh_throughput [--keys 20000] [--quick] [--systems ...] [--markdown]
        [--topology standalone|cluster|both]

`--topology cluster` runs the same rows with the cache on a private 3-master Redis Cluster (the broker a standalone
redis-server); `both` runs the two one after the other and prints them side by side (goal on a cluster: keys/s
>= 0.9x standalone's).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import redis
from celery import Celery

from bench.common import print_table
from bench.topology import (
    CacheServers,
    Figure,
    add_topology_arg,
    cache_servers,
    load_average,
    side_by_side,
    topologies_of,
)
from cachewarm.config.sources import SourceClient
from cachewarm.demo.source_process import SourceProcess
from cachewarm.redis_layer.connections import async_client
from cachewarm.redis_layer.keys import KeyLayout
from cachewarm.settings import Settings
from cachewarm.warming.context import RefreshContext, make_http_client
from cachewarm.warming.refresh import refresh_batch
from cachewarm.warming.refresh import stats as refresh_stats

L = KeyLayout()
GOAL = 1500.0
# The Celery batched row, and its A/B baselines (same code, a lever switched off by its bench-only variable; run in
# the same run as the candidate: `--systems batched,batched-per-key`).
BATCHED = [
    ("batched", "celery: cachewarm batched", {}),
    ("batched-per-key", "celery: batched, a script call per key on a cluster (before issue 29)",
     {"CWBENCH_NODE_GROUPS": "off"}),
    ("batched-dump", "celery: batched, every value encoded again (before issue 29)", {"CWBENCH_RAW_JSON": "off"}),
]

# ---- the baseline's Celery app: one task per key, over the same refresh path --------------------------------
baseline_app = Celery("bench-baseline", broker=os.environ.get("CACHEWARM_BROKER_URL", "redis://127.0.0.1:6379/1"))
baseline_app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True,
                         task_acks_late=True, worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True,
                         worker_hijack_root_logger=False)


@baseline_app.task(name="bench.refresh_one", ignore_result=True)  # type: ignore[untyped-decorator]
def refresh_one(key: str) -> None:
    from cachewarm.warming.refresh_engine import get_engine

    get_engine().submit([key]).result(60)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_config(directory: Path, source_url: str) -> Path:
    path = directory / "cachewarm.toml"
    path.write_text(f'[keyspaces.product]\npattern = "product:{{id}}"\nsource = "{source_url}/products/{{id}}"\n'
                    "ttl = 600\nrefresh_ahead = 60\n")
    return path


def keys_of(n: int) -> list[str]:
    return [f"product:{i}" for i in range(n)]


def floor_row(servers: CacheServers, source_url: str, n: int, concurrency: int, ttl_ms: int) -> tuple[float, float]:
    """The floor: the least a Python refresher does per key, in one asyncio process. `concurrency` coroutines GET
    keys from the source over one aiohttp session; a writer sends each answer as SET PX, every SET that piled up
    since its last round trip in one pipeline. No Celery, no Lua, no fence, no envelope. Keys/s, CPU seconds."""
    import aiohttp

    async def go() -> tuple[float, float]:
        todo: asyncio.Queue[str] = asyncio.Queue()
        fetched: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        written = 0
        done = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=concurrency)
        r = servers.async_client()

        async def fetcher(session: aiohttp.ClientSession) -> None:
            while not todo.empty():
                key = todo.get_nowait()
                async with session.get(f"{source_url}/products/{key.split(':', 1)[1]}") as response:
                    fetched.put_nowait((key, await response.read()))

        async def writer() -> None:
            nonlocal written
            while written < n:
                items = [await fetched.get()]
                while not fetched.empty():
                    items.append(fetched.get_nowait())
                pipe = r.pipeline(transaction=False)
                for key, body in items:
                    pipe.set(key, body, px=ttl_ms)
                await pipe.execute()
                written += len(items)
            done.set()

        async with aiohttp.ClientSession(connector=connector) as session:
            for key in keys_of(min(200, n)):  # warm the pool
                todo.put_nowait(key)
            await asyncio.gather(*(fetcher(session) for _ in range(concurrency)))
            while not fetched.empty():
                fetched.get_nowait()
            for key in keys_of(n):
                todo.put_nowait(key)
            start, cpu = time.perf_counter(), time.process_time()
            write = asyncio.create_task(writer())
            await asyncio.gather(*(fetcher(session) for _ in range(concurrency)))
            await write
            result = n / (time.perf_counter() - start), time.process_time() - cpu
        await r.aclose()
        return result

    return asyncio.run(go())


# ---- processes: every child in a session of its own, killed as a group whatever way the bench ends ------------
_groups: set[int] = set()   # process group ids this bench started and has not killed yet
STOP_GRACE = 10.0           # seconds a worker gets to stop on SIGTERM before its group is killed


def group_members(pgid: int) -> dict[int, float]:
    """The live processes of a process group, each with its CPU seconds so far (utime + stime, from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    members: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            members[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    return members


def settled(pgid: int, interval: float = 0.5, idle: float = 0.05, timeout: float = 20.0) -> dict[int, float]:
    """Waits until a worker node has started (its processes the same and together under `idle` CPU seconds over
    `interval`; at most `timeout` s) and returns their CPU seconds: the sidecar and the processes it starts
    import for about a second after the node answers a ping, which is not refresh work."""
    deadline = time.monotonic() + timeout
    last = group_members(pgid)
    while time.monotonic() < deadline:
        time.sleep(interval)
        now = group_members(pgid)
        if now.keys() == last.keys() and sum(now.values()) - sum(last.values()) < idle:
            return now
        last = now
    log(f"worker node {pgid} still busy {timeout:g} s after it answered: measuring anyway")
    return last


def process_label(pid: int, leader: int) -> str:
    """A worker node's process, by role: main (the group's leader), an exec'd process by its module's last name
    (sidecar, ...), or a forked child (pool or beat: Celery does not retitle them without setproctitle) and its pid."""
    if pid == leader:
        return "main"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return f"pid {pid}"
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""
    return module.rsplit(".", 1)[-1] if module.startswith("cachewarm.") else f"child {pid}"


def kill_group(pgid: int, grace: float = STOP_GRACE, leader: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM to the whole group, then SIGKILL to whatever of it is left after `grace` seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if leader is not None:
                leader.poll()  # reap it, or its zombie counts as a member
            if not group_members(pgid):
                break
            time.sleep(0.05)
        else:
            log(f"process group {pgid} still running {grace:g} s after SIGTERM: killed")
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        _groups.discard(pgid)
        if leader is not None and leader.poll() is None:
            leader.wait(5)


@atexit.register
def _kill_leftovers() -> None:
    for pgid in list(_groups):
        kill_group(pgid, grace=1.0)


def _interrupt(signum: int, frame: object) -> None:
    """SIGINT, SIGTERM and SIGHUP end the bench through every finally, stopping what it started."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def py_spy_dumps(pgid: int, directory: Path) -> list[Path]:
    """`py-spy dump` of every process of the group, one file each (nothing if py-spy is not installed)."""
    exe = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
    if exe is None:
        return []
    paths = []
    for pid in sorted(group_members(pgid)):
        path = directory / f"py-spy-{pid}.txt"
        with open(path, "wb") as out:
            try:
                subprocess.run([exe, "dump", "--locals", "--pid", str(pid)], stdout=out, stderr=subprocess.STDOUT,
                               timeout=30, check=False)
            except subprocess.TimeoutExpired:
                out.write(b"py-spy dump did not answer within 30 s\n")
        paths.append(path)
    return paths


def py_spy_record(members: dict[int, float], leader: int, directory: Path, name: str) -> list[subprocess.Popen[bytes]]:
    """`py-spy record` of every process of a worker node (--profile): collapsed stacks, one file per process,
    written when the row's last key is (the profilers get SIGINT)."""
    exe = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
    if exe is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    directory.mkdir(parents=True, exist_ok=True)
    profilers = []
    for pid in sorted(members):
        out = directory / f"{name}-{process_label(pid, leader).replace(' ', '-')}.txt"
        profilers.append(subprocess.Popen([exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "100",
                                           "--nonblocking", "--threads", "-o", str(out)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return profilers


class ShortRun(RuntimeError):
    """The run stopped short of its keys."""


def wait_written(client: redis.Redis, n: int, timeout: float, stall: float,
                 alive: Callable[[], bool] = lambda: True) -> float:
    """Seconds until n keys were refreshed (refresh:stats refreshed:product), polled every 20 ms; ShortRun if the
    count stays still for `stall` seconds, if the whole takes over `timeout`, or if the worker exits."""
    start = last_change = time.monotonic()
    last = 0
    while True:
        done = int(client.hget(L.refresh_stats, "refreshed:product") or 0)  # type: ignore[arg-type]
        now = time.monotonic()
        if done >= n:
            return now - start
        if done != last:
            last, last_change = done, now
        why = ("the worker exited" if not alive() else
               f"no key refreshed for {stall:g} s" if now - last_change > stall else
               f"not done within {timeout:g} s" if now - start > timeout else None)
        if why is not None:
            raise ShortRun(f"stopped short: {done} of {n} keys refreshed after {now - start:.1f} s ({why})")
        time.sleep(0.02)


TRANSPORTS = {"httpx default": "transport: httpx default", "httpx-aiohttp": "transport: httpx-aiohttp",
              "pool": "transport: aiohttp pool"}


def transport_row(settings: Settings, n: int, concurrency: int, transport: str) -> tuple[float, float]:
    """Keys/s and this process's CPU seconds for n keys through refresh_batch over `transport` (TRANSPORTS)."""
    def client() -> SourceClient:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        if transport == "pool":
            return make_http_client(settings, concurrency=concurrency)
        if transport == "httpx-aiohttp":
            from httpx_aiohttp import AiohttpTransport

            return httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=settings.source_timeout,
                                     limits=limits)
        return httpx.AsyncClient(timeout=settings.source_timeout, limits=limits)

    async def go() -> tuple[float, float]:
        http = client()
        ctx = RefreshContext(settings, async_client(settings.redis_url, timeout=10, cluster=settings.redis_cluster),
                             http, "bench")
        try:
            await refresh_batch(ctx, keys_of(min(200, n)))   # warm the pool
            keys = keys_of(n)
            start, cpu = time.perf_counter(), time.process_time()
            for i in range(0, n, 2000):
                await refresh_batch(ctx, keys[i:i + 2000], force=True)
            return n / (time.perf_counter() - start), time.process_time() - cpu
        finally:
            await http.aclose()
            await ctx.redis.aclose()

    return asyncio.run(go())


def queue_state(broker: redis.Redis) -> str:
    """What the broker holds for cachewarm's queues (Redis transport: a list per queue, a hash of unacked)."""
    lengths = {name: int(broker.llen(name)) for name in ("cachewarm.refresh", "cachewarm.scan")}  # type: ignore[arg-type]
    unacked = int(broker.hlen("unacked"))  # type: ignore[arg-type]
    return ", ".join(f"{name} {length} waiting" for name, length in lengths.items()) + f", {unacked} unacked"


class CeleryRow:
    """Runs one Celery worker node (its own process group) for a row; measures keys/s and the CPU its processes
    spent on the way (the sum over every process of the group: main, pool children, beat, sidecar)."""

    def __init__(self, workdir: Path, stall: float, profile: Path | None = None) -> None:
        self.workdir = workdir
        self.stall = stall
        self.profile = profile
        self.cpu_seconds = 0.0

    def run(self, env: dict[str, str], args: list[str], client: redis.Redis, n: int, start_work: Callable[[], None],
            app: Celery, name: str) -> float:
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "celery", *args], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True)
        _groups.add(proc.pid)
        try:
            deadline = time.monotonic() + 60
            while not app.control.ping(timeout=0.5):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise ShortRun(f"{name} worker did not start: see {log_path}")
            before = settled(proc.pid)
            profilers = py_spy_record(before, proc.pid, self.profile, name) if self.profile else []
            start = time.monotonic()
            start_work()
            try:
                wait_written(client, n, timeout=max(600.0, n / 20), stall=self.stall,  # a hang is a stall: see --stall
                             alive=lambda: proc.poll() is None)
            except ShortRun as exc:
                broker = redis.Redis.from_url(env["CACHEWARM_BROKER_URL"])
                state = queue_state(broker)
                broker.close()
                dumps = py_spy_dumps(proc.pid, self.workdir)
                members = " ".join(str(pid) for pid in sorted(group_members(proc.pid)))
                raise ShortRun(f"{name}: {exc}; broker: {state}; processes {members}"
                               f"{'; py-spy dumps saved' if dumps else ''}") from None
            elapsed = time.monotonic() - start
            after = group_members(proc.pid)
            for profiler in profilers:
                profiler.send_signal(signal.SIGINT)   # py-spy writes its profile on SIGINT
            for profiler in profilers:
                profiler.wait(30)
            spent = {pid: cpu - before.get(pid, 0.0) for pid, cpu in after.items()}
            self.cpu_seconds = sum(spent.values())
            log(f"{name}: CPU ms/key by process: " + ", ".join(
                f"{process_label(pid, proc.pid)} {ms * 1000 / n:.2f}"
                for pid, ms in sorted(spent.items(), key=lambda item: -item[1])))
            return n / elapsed
        finally:
            kill_group(proc.pid, leader=proc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=Settings.model_fields["refresh_batch_size"].default,
                        help="keys per refresh task (default: the setting's default)")
    parser.add_argument("--transport-keys", type=int, default=4000)
    parser.add_argument("--quick", action="store_true", help="2,000 keys")
    parser.add_argument("--systems", default="floor,transport,per-key,batched",
                        help="comma-separated subset of: floor, transport, per-key, batched, batched-per-key, "
                             "batched-dump")
    parser.add_argument("--stall", type=float, default=30.0,
                        help="a Celery row fails when no key is refreshed for this many seconds")
    parser.add_argument("--keep", type=Path, default=None,
                        help="copy the workers' logs into this directory (a failed run keeps them anyway)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy record every process of each Celery row's worker into this directory")
    parser.add_argument("--markdown", action="store_true")
    add_topology_arg(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.keys = min(args.keys, 2000)
        args.transport_keys = min(args.transport_keys, 2000)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGINT too: a background job starts ignoring it
        signal.signal(sig, _interrupt)
    limit = args.concurrency / args.latency
    figures: dict[str, dict[str, float]] = {}
    log(f"before the runs: {load_average()}")
    for topology in topologies_of(args):
        rows: list[list[str]] = []
        try:
            notes = measure(args, rows, topology)
        except (ShortRun, KeyboardInterrupt) as exc:
            log(f"refresh_throughput FAILED ({topology}): {exc or type(exc).__name__}")
            return 1
        title = (f"refresh_throughput ({topology}): {args.keys:,} keys due at once, source {args.latency * 1000:g} "
                 f"ms, concurrency {args.concurrency} (physical limit {limit:,.0f} keys/s, goal {GOAL:,.0f})")
        headers = ["system", "keys/s", "of limit", f"goal >= {GOAL:,.0f}", "CPU ms/key"]
        floor = next((r for r in rows if r[0].startswith("floor")), None)
        if floor is not None:  # issue 12's goals for the Celery row: >= 0.85x the floor's keys/s, <= 1.5x its CPU
            headers += ["keys/s vs floor", "CPU vs floor"]
            for r in rows:
                r += [f"{float(r[1].replace(',', '')) / float(floor[1].replace(',', '')):.2f}x",
                      f"{float(r[4]) / float(floor[4]):.1f}x"]
            notes = [*notes, "vs floor: goals for the Celery row (issue 12): keys/s >= 0.85x, CPU per key <= 1.5x"]
        markdown = print_table(title, headers, rows, notes=[*notes, load_average()])
        if args.markdown:
            print()
            print(markdown)
        figures[topology] = {f"{row[0]}, keys/s": float(row[1].replace(",", "")) for row in rows}
        figures[topology].update({f"{row[0]}, CPU ms/key": float(row[4]) for row in rows})
    if len(figures) > 1:
        side_by_side("refresh_throughput: standalone and cluster",
                     [Figure(name, 0.9 if name.endswith("keys/s") else None, higher=True)
                      for name in figures["standalone"]], figures,
                     notes=["goal: keys/s on the cluster >= 0.9x standalone's (the Celery batched row is the one "
                            "that counts; the others are for context)", f"after the runs: {load_average()}"])
    return 0


def save_logs(workdir: Path, keep: Path | None, failed: bool) -> None:
    """The workers' logs (and any py-spy dumps) into --keep, or, after a failure, into a directory of their own."""
    if keep is None and not failed:
        return
    target = keep or Path(tempfile.mkdtemp(prefix="cachewarm-bench-failed-"))
    target.mkdir(parents=True, exist_ok=True)
    for path in [*workdir.glob("*.log"), *workdir.glob("py-spy-*.txt")]:
        shutil.copyfile(path, target / path.name)
    if failed:
        log(f"logs of the failed run: {target}")


def measure(args: argparse.Namespace, rows: list[list[str]], topology: str) -> list[str]:
    """Runs the rows asked for, appending to `rows`; returns the table's notes."""
    limit = args.concurrency / args.latency

    def row(name: str, rate: float, cpu_seconds: float, keys: int) -> None:
        cpu_ms = cpu_seconds * 1000 / keys
        log(f"{name}: {rate:,.0f} keys/s, {cpu_ms:.2f} CPU ms/key")
        rows.append([name, f"{rate:,.0f}", f"{rate / limit * 100:.0f}%", "Y" if rate >= GOAL else "n",
                     f"{cpu_ms:.2f}"])

    failed = True
    with (cache_servers(topology) as servers,
          SourceProcess(latency=args.latency, items=max(100_000, args.keys)) as source,
          tempfile.TemporaryDirectory(prefix="cachewarm-bench-") as tmp):
        children = [server.process for server in (*servers.nodes, servers.broker) if server is not None]
        for child in (*children, source.process):
            if child is not None:
                _groups.add(child.pid)  # both run in sessions of their own: killed at exit if their owner could not
        workdir = Path(tmp)
        try:
            notes = measure_in(args, servers, source, workdir, row)
            failed = False
            return notes
        finally:
            save_logs(workdir, args.keep, failed)


def measure_in(args: argparse.Namespace, servers: CacheServers, source: SourceProcess, workdir: Path,
               row: Callable[[str, float, float, int], None]) -> list[str]:
    config = write_config(workdir, source.url)
    client = servers.client()
    settings = servers.settings(config=config, refresh_concurrency=args.concurrency, source_timeout=30.0)
    systems = {name.strip() for name in args.systems.split(",")}
    if "floor" in systems:
        servers.flush()
        log(f"floor: aiohttp GET + pipelined SET PX: {args.keys} keys, concurrency {args.concurrency}")
        row("floor: aiohttp + SET PX", *floor_row(servers, source.url, args.keys, args.concurrency, 600_000),
            args.keys)
    for transport, name in TRANSPORTS.items() if "transport" in systems else ():
        servers.flush()
        log(f"{name}: {args.transport_keys} keys, concurrency {args.concurrency}")
        row(name, *transport_row(settings, args.transport_keys, args.concurrency, transport), args.transport_keys)

    env = {**os.environ, **servers.env(), "CACHEWARM_CONFIG": str(config), "CACHEWARM_METRICS_PORT": "0",
           "CACHEWARM_SOURCE_TIMEOUT": "30",
           "CACHEWARM_REFRESH_BATCH_SIZE": str(args.batch),
           "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                      os.environ.get("PYTHONPATH")) if p)}
    keys = keys_of(args.keys)
    celery = CeleryRow(workdir, args.stall, args.profile)

    # baseline: one task per key
    servers.flush()
    baseline_app.conf.broker_url = servers.broker_url
    base_env = {**env, "CACHEWARM_REFRESH_CONCURRENCY": str(args.concurrency)}

    def send_per_key() -> None:
        with baseline_app.producer_or_acquire() as producer:
            for key in keys:
                refresh_one.apply_async(args=[key], producer=producer)

    if "per-key" in systems:
        log(f"celery: one task per key: {args.keys} keys, threads pool x {args.concurrency}")
        rate = celery.run(base_env, ["-A", "bench.refresh_throughput:baseline_app", "worker", "--pool", "threads",
                                     "--concurrency", str(args.concurrency), "--loglevel", "WARNING",
                                     "--without-gossip", "--without-mingle"],
                          client, args.keys, send_per_key, baseline_app, "baseline")
        row("celery: one task per key", rate, celery.cpu_seconds, args.keys)

    # cachewarm: one scan, batched refresh tasks
    servers.flush()
    per_process = max(1, args.concurrency // args.processes)
    cw_env = {**env, "CACHEWARM_REFRESH_CONCURRENCY": str(per_process), "CACHEWARM_SCAN_INTERVAL": "1"}
    from cachewarm.tasks.refresh import MAX_IN_FLIGHT
    from cachewarm.worker.celery_app import create_app

    cw_app = create_app(servers.settings(config=config))

    def start_batched() -> None:
        client.sadd(L.pinned("product"), *keys)      # all due at once (missing), from now on
        cw_app.send_task("cachewarm.scan")

    variants = [(name, label, extra) for name, label, extra in BATCHED if name in systems]
    for name, label, extra in variants:
        servers.flush()
        log(f"{label}: {args.keys} keys, {args.processes} processes x {per_process}")
        from bench.capacity import Meter, Phase

        meter = Meter(servers)
        before = meter.snapshot()
        rate = celery.run({**cw_env, **extra},
                          ["-A", "cachewarm.worker", "worker", "-B", "-s", str(workdir / f"beat-schedule-{name}"),
                           "--pool", "prefork", "--concurrency", str(args.processes), "--loglevel", "INFO",
                           "--without-gossip", "--without-mingle"],
                          client, args.keys, start_batched, cw_app, "cachewarm")
        row(label, rate, celery.cpu_seconds, args.keys)
        counted = Phase(name, args.keys, meter.snapshot().minus(before))
        log(f"Redis commands per key over the {name} row (scans, claims, refreshes): {counted.commands()}; "
            f"of which error replies: {counted.failures()}")
        meter.close()
        log(f"refresh:stats after the {name} run: {refresh_stats(client, L)}")
    client.close()
    return [
        f"transport rows: {args.transport_keys:,} keys through refresh_batch in one process, no Celery",
        f"cachewarm batched: {args.processes} prefork processes x {per_process} concurrent fetches, "
        f"batches of {args.batch}, up to {MAX_IN_FLIGHT} batches in flight per process; "
        f"one task per key: threads pool of {args.concurrency}",
        "CPU ms/key: CPU time (user + system) over keys, of the bench process for the transport rows, summed over "
        "every process of the worker node (main, pool, beat, sidecar; /proc/PID/stat) for the Celery rows; "
        "Redis and the source not counted",
    ]


if __name__ == "__main__":
    sys.exit(main())
