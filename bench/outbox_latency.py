"""Outbox benchmark: commit-to-stream latency of the relay, and what each way of invalidating costs per write.

1. Commit-to-stream (PostgreSQL, and SQLite for comparison): a writer commits --rate transactions/s (default 500;
   SQLite --sqlite-rate, default 100)
   for --seconds (default 20), each an UPDATE of a row plus its outbox row; `cachewarm relay` runs as its own
   process (LISTEN/NOTIFY on PostgreSQL; polling every CACHEWARM_OUTBOX_POLL_INTERVAL on SQLite); a reader process
   blocks on XREAD and stamps each entry as it arrives. Latency = arrival time - the time the writer's COMMIT
   returned. PostgreSQL runs with its default durability (fsync on, synchronous_commit on); SQLite in WAL mode
   (synchronous FULL). Goal: p99 <= 20 ms on PostgreSQL.
2. Cost per write, --writes sequential writes (default 2,000) of one row, per way of invalidating:
     no invalidation          the transaction alone (UPDATE ... RETURNING version; COMMIT)
     publish after commit     + publish_invalidation(key, version=v) after the COMMIT
     raw XADD                 + XADD cachewarm:invalidations MAXLEN ~ N * key K version V ts MS (redis-py)
     outbox (DB-API)          + INSERT INTO cachewarm_outbox inside the transaction
     SQLAlchemy ORM: the same update through a Session (get, set, commit), with no hook, then with
     cachewarm.contrib.sqlalchemy's CacheInvalidator in "outbox" and in "publish" mode.
   Columns: p50 / p99 of the whole write (µs), p50 / p99 of the invalidation step alone (µs: the publish, the XADD,
   the INSERT, the hook's own callbacks), and the round trips it adds: Redis commands counted by the server (INFO
   commandstats) per write, database statements per write by construction.
3. The relay's own cost: rows drained per second from a full outbox, µs per row.

    python -m bench.outbox_latency [--quick] [--rate 500] [--seconds 20] [--writes 2000] [--markdown]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import BigInteger, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bench.common import latency_stats, print_table
from cachewarm import Settings, publish_invalidation
from cachewarm.contrib.sqlalchemy import CacheInvalidator, outbox_table
from cachewarm.demo.redis_server import RedisServer
from cachewarm.outbox.relay import Relay
from cachewarm.outbox.schema import POSTGRES_STATEMENTS, SQLITE_STATEMENTS
from cachewarm.redis_layer.keys import INVALIDATION_STREAM
from tests.support.outbox_db import connect
from tests.support.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
ITEMS = 1000


def prepare(url: str) -> None:
    """The outbox table and an `items` table of ITEMS rows (id, version)."""
    with connect(url) as (conn, style):
        if style == "qmark":  # what an SQLite application with a concurrent reader runs (synchronous stays FULL)
            conn.execute("PRAGMA journal_mode=WAL")
        for statement in SQLITE_STATEMENTS if style == "qmark" else POSTGRES_STATEMENTS:
            conn.execute(statement)
        conn.execute("CREATE TABLE IF NOT EXISTS items (id integer PRIMARY KEY, name varchar(100), "
                     "version bigint NOT NULL)")
        mark = "?" if style == "qmark" else "%s"
        conn.cursor().executemany(f"INSERT INTO items (id, name, version) VALUES ({mark}, {mark}, 1)",
                                  [(i, f"item {i}") for i in range(ITEMS)])
        conn.commit()


# ------------------------------------------------------------------------------------------ commit-to-stream


def _reader(redis_url: str, expected: int, out_path: str, ready: Any) -> None:
    client = redis.Redis.from_url(redis_url)
    last = "$"
    arrivals: list[str] = []
    ready.set()
    while len(arrivals) < expected:
        got = client.xread({INVALIDATION_STREAM: last}, block=2000, count=1000)
        now = time.time()
        if not got:
            continue
        for entry_id, fields in got[0][1]:
            last = entry_id
            arrivals.append(f"{fields[b'key'].decode()} {now!r}")
    Path(out_path).write_text("\n".join(arrivals))


@contextmanager
def relay_process(redis_url: str, outbox_url: str, poll: float) -> Iterator[None]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEWARM_")}
    env.update(PYTHONPATH=str(ROOT), CACHEWARM_REDIS_URL=redis_url, CACHEWARM_OUTBOX_URL=outbox_url,
               CACHEWARM_OUTBOX_POLL_INTERVAL=str(poll))
    proc = subprocess.Popen([sys.executable, "-c", "from cachewarm.cli import main; main()", "relay", "--loglevel",
                             "WARNING"], env=env,
                            start_new_session=True)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def commit_to_stream(redis_url: str, outbox_url: str, *, rate: float, seconds: float, poll: float) -> list[float]:
    """Seconds from each COMMIT's return to its entry's arrival on the stream."""
    client = redis.Redis.from_url(redis_url)
    client.delete(INVALIDATION_STREAM)
    total = int(rate * seconds)
    out_path = tempfile.mktemp(prefix="outbox-arrivals-")
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    reader = ctx.Process(target=_reader, args=(redis_url, total + 1, out_path, ready))
    reader.start()
    ready.wait(10)
    committed: dict[str, float] = {}
    with relay_process(redis_url, outbox_url, poll), connect(outbox_url) as (conn, style):
        mark = "?" if style == "qmark" else "%s"
        cur = conn.cursor()
        cur.execute(f"INSERT INTO cachewarm_outbox (key, created_ms) VALUES ({mark}, {mark})",
                    ("bench:warmup", int(time.time() * 1000)))
        conn.commit()
        deadline = time.monotonic() + 30
        while client.xlen(INVALIDATION_STREAM) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        start = time.monotonic()
        for i in range(total):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            key = f"bench:{i}"
            cur.execute(f"UPDATE items SET version = version + 1 WHERE id = {mark}", (i % ITEMS,))
            cur.execute(f"INSERT INTO cachewarm_outbox (key, version, created_ms) VALUES ({mark}, {mark}, {mark})",
                        (key, i, int(time.time() * 1000)))
            conn.commit()
            committed[key] = time.time()
        reader.join(60)
    client.close()
    arrivals = dict(line.split() for line in Path(out_path).read_text().splitlines())
    os.unlink(out_path)
    return [float(arrivals[key]) - at for key, at in committed.items() if key in arrivals]


# ------------------------------------------------------------------------------------------ cost per write


def redis_commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


Write = Callable[[int], float]  # one write; returns the seconds its invalidation took (0.0: none)


def time_interleaved(ways: dict[str, Write], writes: int) -> dict[str, tuple[list[float], list[float]]]:
    """Each way once per round, `writes` rounds (after a warm-up), so that the machine's noise is spread evenly;
    per way, the whole writes' times and their invalidations' times."""
    for i in range(min(100, writes)):  # warm-up: connections, statement caches
        for write in ways.values():
            write(i)
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in ways}
    for i in range(writes):
        for name, write in ways.items():
            started = time.perf_counter()
            added = write(i)
            times[name][0].append(time.perf_counter() - started)
            times[name][1].append(added)
    return times


def redis_commands_per_write(client: redis.Redis, write: Write, writes: int = 50) -> float:
    before = redis_commands(client)
    for i in range(writes):
        write(i)
    return (redis_commands(client) - before) / writes


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def dbapi_ways(cur: Any, mark: str, redis_url: str, settings: Settings) -> dict[str, tuple[Write, int]]:
    """name -> (write(i), database statements added)"""
    client = redis.Redis.from_url(redis_url)

    def update(i: int) -> int:
        cur.execute(f"UPDATE items SET version = version + 1 WHERE id = {mark} RETURNING version", (i % ITEMS,))
        return int(cur.fetchone()[0])

    def none(i: int) -> float:
        update(i)
        cur.connection.commit()
        return 0.0

    def publish(i: int) -> float:
        version = update(i)
        cur.connection.commit()
        return _timed(lambda: publish_invalidation(f"item:{i % ITEMS}", version=version, redis=client,
                                                   settings=settings))

    def raw(i: int) -> float:
        version = update(i)
        cur.connection.commit()
        return _timed(lambda: client.execute_command(
            "XADD", INVALIDATION_STREAM, "MAXLEN", "~", 1000000, "*", "key", f"item:{i % ITEMS}",
            "version", version, "ts", int(time.time() * 1000)))

    def outbox(i: int) -> float:
        version = update(i)
        added = _timed(lambda: cur.execute(
            f"INSERT INTO cachewarm_outbox (key, version, created_ms) VALUES ({mark}, {mark}, {mark})",
            (f"item:{i % ITEMS}", version, int(time.time() * 1000))))
        cur.connection.commit()
        return added

    return {"no invalidation": (none, 0), "publish after commit": (publish, 0), "raw XADD": (raw, 0),
            "outbox (DB-API)": (outbox, 1)}


class TimedInvalidator(CacheInvalidator):
    """The hook, timing its own callbacks (what it adds to a write)."""

    spent = 0.0

    def _after_flush(self, session: Session, flush_context: Any) -> None:
        started = time.perf_counter()
        super()._after_flush(session, flush_context)
        self.spent += time.perf_counter() - started

    def _after_commit(self, session: Session) -> None:
        started = time.perf_counter()
        super()._after_commit(session)
        self.spent += time.perf_counter() - started


def orm_ways(url: str, settings: Settings) -> tuple[dict[str, tuple[Write, int]], Callable[[], None]]:
    """name -> (write(i), database statements added); and the teardown"""

    class Base(DeclarativeBase):
        pass

    outbox = outbox_table(Base.metadata)

    class Item(Base):
        __tablename__ = "items"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(100))
        version: Mapped[int] = mapped_column(BigInteger)
        __mapper_args__ = {"version_id_col": version}

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    ways: dict[str, tuple[Write, int]] = {}
    for name, mode in (("SQLAlchemy, no hook", None), ("SQLAlchemy hook, outbox", "outbox"),
                       ("SQLAlchemy hook, publish", "publish")):
        class BenchSession(Session):
            pass

        hook = TimedInvalidator(mode=mode or "outbox", table=outbox, settings=settings)  # type: ignore[arg-type]
        if mode is not None:
            hook.watch(Item, keys=["item:{id}"], version="version")
            hook.install(BenchSession)

        def write(i: int, cls: type[Session] = BenchSession, hook: TimedInvalidator = hook) -> float:
            hook.spent = 0.0
            with cls(engine) as session:
                item = session.get(Item, i % ITEMS)
                assert item is not None
                item.name = f"item {i} {time.monotonic_ns()}"  # a change every time
                session.commit()
            return hook.spent

        ways[name] = (write, 1 if mode == "outbox" else 0)
    return ways, engine.dispose


def cost_rows(url: str, redis_url: str, writes: int) -> list[list[str]]:
    settings = Settings.load(redis_url=redis_url)
    client = redis.Redis.from_url(redis_url)
    rows: list[list[str]] = []
    with connect(url) as (conn, style):
        mark = "?" if style == "qmark" else "%s"
        orm, teardown = orm_ways(url, settings)
        ways = {**dbapi_ways(conn.cursor(), mark, redis_url, settings), **orm}
        times = time_interleaved({name: write for name, (write, _) in ways.items()}, writes)
        for name, (write, statements) in ways.items():
            whole, added = latency_stats(times[name][0]), latency_stats(times[name][1])
            rows.append([name, f"{whole.p50 * 1e6:.0f}", f"{whole.p99 * 1e6:.0f}", f"{added.p50 * 1e6:.0f}",
                         f"{added.p99 * 1e6:.0f}", f"{redis_commands_per_write(client, write):.2f}",
                         f"+{statements}"])
        teardown()
    client.close()
    return rows


def relay_throughput(url: str, redis_url: str, rows: int) -> tuple[float, float]:
    with connect(url) as (conn, style):
        mark = "?" if style == "qmark" else "%s"
        conn.cursor().execute("DELETE FROM cachewarm_outbox")
        conn.cursor().executemany(
            f"INSERT INTO cachewarm_outbox (key, version, created_ms) VALUES ({mark}, {mark}, {mark})",
            [(f"item:{i % ITEMS}", i, int(time.time() * 1000)) for i in range(rows)])
        conn.commit()
    with Relay(Settings.load(redis_url=redis_url, outbox_url=url)) as relay:
        started = time.perf_counter()
        moved = relay.drain()
        elapsed = time.perf_counter() - started
    return moved / elapsed, elapsed / moved * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=500.0, help="commits/s on PostgreSQL")
    parser.add_argument("--sqlite-rate", type=float, default=100.0,
                        help="commits/s on SQLite (its one write lock, shared with the relay, starves at 500/s)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="5 s of commits, 500 writes")
    parser.add_argument("--only", choices=("latency", "cost", "relay"), default=None, help="one part only")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.writes = 5.0, 500
    markdown: list[str] = []
    with RedisServer() as redis_server, PostgresServer(options={}) as postgres, \
            tempfile.TemporaryDirectory() as tmp:
        redis_url = redis_server.url()
        urls = {"PostgreSQL": postgres.create_database("bench"), "SQLite": f"sqlite:///{tmp}/bench.db"}
        for url in urls.values():
            prepare(url)
        latency_rows = []
        for backend, url in urls.items() if args.only in (None, "latency") else ():
            poll = 0.1
            rate = args.rate if backend == "PostgreSQL" else args.sqlite_rate
            lags = commit_to_stream(redis_url, url, rate=rate, seconds=args.seconds, poll=poll)
            stats = latency_stats(lags)
            how = "LISTEN/NOTIFY" if backend == "PostgreSQL" else f"poll {poll:g} s"
            latency_rows.append([backend, how, f"{rate:g}/s", str(stats.count), f"{stats.p50 * 1000:.2f}",
                                 f"{stats.p99 * 1000:.2f}", f"{stats.max * 1000:.2f}"])
        markdown.append(print_table(
            "Commit-to-stream latency (ms)" if latency_rows else "Commit-to-stream latency: not run",
            ["database", "relay wakes by", "commits", "rows", "p50", "p99", "max"], latency_rows,
            notes=[f"{args.seconds:g} s of commits; `cachewarm relay` in its own process; goal p99 <= 20 ms "
                   "on PostgreSQL"]))
        for backend, url in urls.items() if args.only in (None, "cost") else ():
            markdown.append(print_table(
                f"Cost per write, {backend} ({args.writes} sequential writes)",
                ["way", "write p50 µs", "write p99 µs", "invalidation p50 µs", "invalidation p99 µs",
                 "Redis commands/write", "DB statements"],
                cost_rows(url, redis_url, args.writes),
                notes=["invalidation: the time of the added step alone (the XADD, the INSERT, the hook's callbacks)",
                       "the whole write includes the COMMIT (on PostgreSQL a WAL flush), so its spread is the disk's"]))
        relay_rows = []
        for backend, url in urls.items() if args.only in (None, "relay") else ():
            per_s, per_row = relay_throughput(url, redis_url, 20_000)
            relay_rows.append([backend, "20000", f"{per_s:,.0f}", f"{per_row:.1f}"])
        markdown.append(print_table("Relay throughput (a full outbox drained, batches of 500)",
                                    ["database", "rows", "rows/s", "µs/row"], relay_rows))
    if args.markdown:
        print("\n" + "\n".join(markdown))


if __name__ == "__main__":
    main()
