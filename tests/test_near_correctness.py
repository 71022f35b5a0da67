"""The near cache never serves what Redis has replaced: a writer changes keys at 1,000 writes/s while four reader
processes (two sync, two async) read them through local copies; no read may get a version older than one Redis had
acknowledged 5 ms before the read began. The same run with the readers deaf to Redis's pushes must find stale reads
(the check bites). Also with the tracking connections killed mid-run and with Redis restarted mid-run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from cachewarm.demo.redis_server import RedisServer
from cachewarm.near.link import LINK_NAME
from tests.support.near_load import run_load, stale_reads

SECONDS = 6.0
KEYS = 200

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def local_hits(figures: list[dict]) -> int:
    return sum(f["near"]["hits"] for f in figures)


def test_no_read_is_older_than_what_redis_held(redis_url: str, tmp_path: Path) -> None:
    writes, reads, figures = run_load(redis_url, tmp_path, seconds=SECONDS, keys=KEYS)
    # A loaded 2-core host may not reach the rates asked for (1,000 writes/s, 4 x 1,000 reads/s); the 60 s run in
    # bench/near_cache.py reports what it reached. Here: enough changes and reads to catch a stale one.
    assert len(writes) > SECONDS * 200 and len(reads) > SECONDS * 1000
    assert local_hits(figures) > 1000, figures   # the local copies were used, not bypassed
    assert stale_reads(writes, reads) == []


def test_the_check_bites_without_pushes(redis_url: str, tmp_path: Path) -> None:
    writes, reads, _ = run_load(redis_url, tmp_path, seconds=SECONDS, keys=KEYS, no_push=True)
    stale = stale_reads(writes, reads)
    assert len(stale) > 10, f"only {len(stale)} stale reads of {len(reads)} without pushes ({len(writes)} writes)"


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

    writes, reads, figures = run_load(redis_url, tmp_path, seconds=SECONDS, keys=KEYS, during=kill_links)
    killer.close()
    assert len(killed) >= 10
    assert sum(f["_link"]["resets"] for f in figures) >= 4
    assert stale_reads(writes, reads) == []


def test_redis_restarted(tmp_path: Path) -> None:
    losses: list[float] = []
    with RedisServer() as server:
        def restart() -> None:
            time.sleep(SECONDS / 3)
            server.stop()  # a write acknowledged while it shuts down is lost too: the loss is when it is gone
            losses.append(time.monotonic())
            time.sleep(0.5)
            server.start()

        writes, reads, _ = run_load(server.url(0), tmp_path, seconds=SECONDS, keys=KEYS, during=restart)
    assert losses
    # Readers whose Redis connection broke read from the source for a while (CACHEWARM_REDIS_BACKOFF): those -1s did
    # not come from a cache; a -1 the near cache served is judged.
    assert stale_reads(writes, reads, losses=losses, ignore_missing=True) == []
