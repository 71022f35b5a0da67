"""The near cache never serves what Redis has replaced: a writer changes keys at 1,000 writes/s while four reader
processes (two sync, two async) read them through local copies; no read may get a version older than one Redis had
acknowledged 5 ms before the read began. The same run with the readers deaf to Redis's pushes must find stale reads
(the check bites). Also with the tracking connections killed mid-run and with Redis restarted mid-run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from cachewarm.demo.redis_server import RedisServer
from cachewarm.near.link import LINK_NAME
from tests.support.near_load import KEYSPACE_TOML, stale_reads
from tests.support.waiting import wait_until

SECONDS = 6.0
KEYS = 200

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def run_load(url: str, tmp_path: Path, *, no_push: bool = False, during=None) -> tuple[list, list, list[dict]]:
    """Runs the writer and four readers; `during(started)` runs in this process meanwhile. Returns the writes,
    the reads and the sync readers' near-cache figures."""
    config = tmp_path / "near.toml"
    config.write_text(KEYSPACE_TOML)
    base = [sys.executable, "-m", "tests.support.near_load"]
    common = ["--redis", url, "--config", str(config), "--keys", str(KEYS)]
    writes_path = tmp_path / "writes.json"
    writer = subprocess.Popen([*base, "writer", *common, "--rate", "1000", "--seconds", str(SECONDS + 2),
                               "--out", str(writes_path)])
    readers = []
    try:
        wait_until(lambda: Path(str(writes_path) + ".ready").exists(), timeout=30, what="the writer's keys")
        for n in range(4):
            extra = (["--async"] if n % 2 else []) + (["--no-push"] if no_push else [])
            readers.append(subprocess.Popen([*base, "reader", *common, "--seconds", str(SECONDS), "--read-rate", "1000",
                                             "--out", str(tmp_path / f"reads{n}.json"), *extra]))
        if during is not None:
            during()
        for proc in [*readers, writer]:
            assert proc.wait(timeout=60) == 0
    finally:
        for proc in [*readers, writer]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    writes = json.loads(writes_path.read_text())
    reads, figures = [], []
    for n in range(4):
        data = json.loads((tmp_path / f"reads{n}.json").read_text())
        reads.extend(data["reads"])
        if data["figures"] is not None:
            figures.append(data["figures"])
    return writes, reads, figures


def local_hits(figures: list[dict]) -> int:
    return sum(f["near"]["hits"] for f in figures)


def test_no_read_is_older_than_what_redis_held(redis_url: str, tmp_path: Path) -> None:
    writes, reads, figures = run_load(redis_url, tmp_path)
    # A loaded 2-core host may not reach the rates asked for (1,000 writes/s, 4 x 1,000 reads/s); the 60 s run in
    # bench/near_cache.py reports what it reached. Here: enough changes and reads to catch a stale one.
    assert len(writes) > SECONDS * 200 and len(reads) > SECONDS * 1000
    assert local_hits(figures) > 1000, figures   # the local copies were used, not bypassed
    assert stale_reads(writes, reads) == []


def test_the_check_bites_without_pushes(redis_url: str, tmp_path: Path) -> None:
    writes, reads, _ = run_load(redis_url, tmp_path, no_push=True)
    assert len(stale_reads(writes, reads)) > 100


def test_killed_tracking_connections(redis_url: str, tmp_path: Path) -> None:
    killer = redis.Redis.from_url(redis_url)
    killed = []

    def kill_links() -> None:
        deadline = time.monotonic() + SECONDS - 1
        while time.monotonic() < deadline:
            time.sleep(0.7)
            for client in killer.client_list():
                if client["name"] == LINK_NAME:
                    killer.client_kill_filter(_id=client["id"])
                    killed.append(client["id"])

    writes, reads, figures = run_load(redis_url, tmp_path, during=kill_links)
    killer.close()
    assert len(killed) >= 10
    assert sum(f["_link"]["resets"] for f in figures) >= 4
    assert stale_reads(writes, reads) == []


def test_redis_restarted(tmp_path: Path) -> None:
    losses: list[float] = []
    with RedisServer() as server:
        def restart() -> None:
            time.sleep(SECONDS / 3)
            losses.append(time.monotonic())
            server.stop()
            time.sleep(0.5)
            server.start()

        writes, reads, _ = run_load(server.url(0), tmp_path, during=restart)
    assert losses
    assert stale_reads(writes, reads, losses=losses) == []
