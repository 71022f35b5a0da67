"""Crashes around the outbox, on PostgreSQL and SQLite: writers SIGKILLed at random points across 200 transactions
(every committed change's invalidation applied by the real consumer, none for a rolled-back one), and a relay
SIGKILLed between its XADD and its DELETE (the rows are published again: a duplicate with the same fields)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import redis

from cachewarm import Settings
from cachewarm.config.keyspaces import KeyspaceRegistry
from cachewarm.invalidation.consumer import InvalidationConsumer
from cachewarm.outbox.relay import Relay
from cachewarm.redis_layer.keys import INVALIDATION_STREAM, KeyLayout
from tests.support.outbox_db import BACKENDS, connect, new_database, outbox_count
from tests.support.processes import ROOT
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(90)

TRANSACTIONS = 200
ITEMS = 10

# One writer: each transaction records itself in `commits` and its invalidation in the outbox, with short random
# pauses between the steps so that a SIGKILL lands anywhere (before, between, during or after the commit).
WRITER = """
import random, sys, time
url, first = sys.argv[1], int(sys.argv[2])
if url.startswith("sqlite"):
    import sqlite3
    conn, mark = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=10), "?"
else:
    import psycopg
    conn, mark = psycopg.connect(url), "%s"
cur = conn.cursor()
print("ready", flush=True)
for txn in range(first, first + 100000):
    print("begin", txn, flush=True)
    time.sleep(random.random() * 0.004)
    cur.execute(f"INSERT INTO commits (txn, item) VALUES ({mark}, {mark})", (txn, txn % ITEMS))
    time.sleep(random.random() * 0.004)
    cur.execute(f"INSERT INTO cachewarm_outbox (key, version, created_ms) VALUES ({mark}, {mark}, {mark})",
                (f"item:{txn % ITEMS}", txn, int(time.time() * 1000)))
    time.sleep(random.random() * 0.004)
    conn.commit()
""".replace("ITEMS", str(ITEMS))

# A relay that dies (SIGKILL) where it would delete its first batch: after the XADD returned.
DYING_RELAY = """
import os, signal
from cachewarm import Settings
from cachewarm.outbox.relay import Relay
relay = Relay(Settings.load())
relay.dialect.delete = lambda ids: os.kill(os.getpid(), signal.SIGKILL)
relay.drain()
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEWARM_")}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def _versions(client: redis.Redis) -> list[tuple[str, int]]:
    return [(f[b"key"].decode(), int(f[b"version"])) for _, f in client.xrange(INVALIDATION_STREAM)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_writers_killed_at_random_points_lose_no_invalidation(backend: str, tmp_path: Path, redis_url: str,
                                                              redis_client: redis.Redis) -> None:
    url = new_database(backend, tmp_path)
    with connect(url) as (conn, _):
        conn.execute("CREATE TABLE commits (txn bigint PRIMARY KEY, item bigint NOT NULL)")
        conn.commit()
    settings = Settings.load(redis_url=redis_url, outbox_url=url, outbox_poll_interval=0.01)
    consumer = InvalidationConsumer(settings, keyspaces=KeyspaceRegistry.from_mapping({}), name="kill-test")
    consumer.ensure_group()
    rng = random.Random(13)
    begun = kills = 0
    with Relay(settings).start(), Relay(settings).start():  # two relays, as two worker nodes would run
        writer_no = 0
        while begun < TRANSACTIONS:
            writer_no += 1
            proc = subprocess.Popen([sys.executable, "-c", WRITER, url, str(writer_no * 100_000)], env=_env(),
                                    stdout=subprocess.PIPE, cwd=ROOT)
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.0, 0.25))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            out = proc.stdout.read()  # (not communicate(timeout=): it would skip what readline buffered)
            proc.stdout.close()
            kills += 1
            begun += out.count(b"begin")
        wait_until(lambda: outbox_count(url) == 0, 20, "the relays to empty the outbox")
    with connect(url) as (conn, _):
        committed = {int(txn): int(item) for txn, item in conn.execute("SELECT txn, item FROM commits").fetchall()}
    published = _versions(redis_client)
    assert committed, "no transaction committed: the kills came too early to test anything"
    assert {v for _, v in published} == set(committed)  # every committed one, and no rolled-back one
    assert all(key == f"item:{committed[v]}" for key, v in published)
    # ... and applied: the real consumer leaves each item's fence at its last committed version.
    while consumer.poll(block_ms=0):
        pass
    latest: dict[int, int] = defaultdict(int)
    for txn, item in committed.items():
        latest[item] = max(latest[item], txn)
    layout = KeyLayout(settings.key_prefix)
    for item, version in latest.items():
        assert int(redis_client.hget(layout.fence(f"item:{item}"), "v") or -1) == version
    print(f"\n{backend}: {begun} transactions begun, {kills} writers SIGKILLed, {len(committed)} committed, "
          f"{begun - len(committed)} rolled back, {len(published)} events, 0 lost")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_relay_killed_between_xadd_and_delete_publishes_again(backend: str, tmp_path: Path, redis_url: str,
                                                                redis_client: redis.Redis) -> None:
    url = new_database(backend, tmp_path)
    with connect(url) as (conn, style):
        mark = "?" if style == "qmark" else "%s"
        conn.cursor().executemany(
            f"INSERT INTO cachewarm_outbox (key, version, created_ms) VALUES ({mark}, {mark}, {mark})",
            [(f"product:{i}", i, 1_700_000_000_000 + i) for i in range(20)])
        conn.commit()
    dying = subprocess.run([sys.executable, "-c", DYING_RELAY], env=_env(CACHEWARM_REDIS_URL=redis_url,
                                                                          CACHEWARM_OUTBOX_URL=url),
                           cwd=ROOT, capture_output=True, timeout=30)
    assert dying.returncode == -signal.SIGKILL, dying.stderr.decode()[-2000:]
    first = redis_client.xrange(INVALIDATION_STREAM)
    assert len(first) == 20
    assert outbox_count(url) == 20  # its transaction died with it: the rows are still there
    with Relay(Settings.load(redis_url=redis_url, outbox_url=url)) as relay:
        assert relay.drain() == 20
    entries = [fields for _, fields in redis_client.xrange(INVALIDATION_STREAM)]
    assert entries[:20] == entries[20:] == [fields for _, fields in first]  # the same events again: same versions
    assert outbox_count(url) == 0
