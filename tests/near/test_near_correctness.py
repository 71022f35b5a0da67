"""The near cache never serves what Redis has replaced: a writer changes keys at 1,000 writes/s while four reader
processes (two sync, two async) read them through local copies; no read may get a version older than one Redis had
acknowledged 5 ms before the read began. The same run with the readers deaf to Redis's pushes must find stale reads
(the check bites). Also with the tracking connections killed mid-run and with Redis restarted mid-run."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachewarm.demo.redis_server import RedisServer
from tests.support.near_load import kill_tracking_links, restart_redis, run_load, stale_reads

SECONDS = 6.0
KEYS = 200

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def local_hits(figures: list[dict]) -> int:
    return sum(f["near"]["hits"] for f in figures)


def enough(writes: list, reads: list, figures: list[dict]) -> bool:
    """A run that can show something: enough changes and reads to catch a stale one, with the local copies used.
    A loaded 2-core host may not reach the rates asked for (1,000 writes/s, 4 x 1,000 reads/s; the 60 s run in
    bench/near_cache.py reports what it reached), and a near cache serves no local copy while its link's health
    checks fail, which a very busy host can cause for a whole run (seen once: 0 stale reads without pushes, 641
    writes)."""
    return len(writes) > SECONDS * 200 and len(reads) > SECONDS * 1000 and local_hits(figures) > 1000


def run_until_enough(redis_url: str, tmp_path: Path, **options: object) -> tuple[list, list, list[dict]]:
    """Up to three runs, until one that can show something (see `enough`); the last one in any case."""
    for attempt in range(3):
        writes, reads, figures = run_load(redis_url, tmp_path / str(attempt), seconds=SECONDS, keys=KEYS,
                                          **options)  # type: ignore[arg-type]
        if enough(writes, reads, figures):
            break
    return writes, reads, figures


def test_no_read_is_older_than_what_redis_held(redis_url: str, tmp_path: Path) -> None:
    writes, reads, figures = run_until_enough(redis_url, tmp_path)
    assert len(writes) > SECONDS * 200 and len(reads) > SECONDS * 1000
    assert local_hits(figures) > 1000, figures   # the local copies were used, not bypassed
    assert stale_reads(writes, reads) == []


def test_the_check_bites_without_pushes(redis_url: str, tmp_path: Path) -> None:
    writes, reads, figures = run_until_enough(redis_url, tmp_path, no_push=True)
    assert enough(writes, reads, figures), (len(writes), len(reads), figures)
    stale = stale_reads(writes, reads)
    assert len(stale) > 10, (f"only {len(stale)} stale reads of {len(reads)} without pushes ({len(writes)} writes, "
                             f"{local_hits(figures)} local hits)")


def test_killed_tracking_connections(redis_url: str, tmp_path: Path) -> None:
    killed: list[int] = []
    writes, reads, figures = run_load(redis_url, tmp_path, seconds=SECONDS, keys=KEYS,
                                      during=lambda: killed.append(kill_tracking_links(redis_url, SECONDS - 1)))
    assert killed[0] >= 10
    assert sum(f["_link"]["resets"] for f in figures) >= 4
    assert stale_reads(writes, reads) == []


def test_redis_restarted(tmp_path: Path) -> None:
    losses: list[float] = []
    with RedisServer() as server:
        writes, reads, _ = run_load(server.url(0), tmp_path, seconds=SECONDS, keys=KEYS,
                                    during=lambda: restart_redis(server, SECONDS / 3, losses))
    assert losses
    # Readers whose Redis connection broke read from the source for a while (CACHEWARM_REDIS_BACKOFF): those -1s did
    # not come from a cache; a -1 the near cache served is judged.
    assert stale_reads(writes, reads, losses=losses, ignore_missing=True) == []
