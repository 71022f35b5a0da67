"""A consumer killed with SIGKILL between reading a batch and acknowledging it loses nothing: its entries stay
pending, another consumer claims them after claim_idle_ms (XAUTOCLAIM), applies every one, and the pending list
drains. A consumer that acknowledged before applying would lose the whole batch here."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import redis

from cachewarm import Cache, Settings, publish_invalidation
from cachewarm.invalidation.consumer import InvalidationConsumer
from cachewarm.redis_layer.keys import CONSUMER_GROUP, DEAD_LETTER_STREAM, INVALIDATION_STREAM
from tests.support.waiting import wait_until

N = 60

DOOMED = textwrap.dedent("""
    import os, signal
    from cachewarm import Settings
    from cachewarm.invalidation import consumer as mod

    def die_before_ack(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)  # read, not yet applied nor acknowledged

    mod.apply_events = die_before_ack
    c = mod.InvalidationConsumer(Settings.load(), name="doomed", block_ms=2000)
    c.ensure_group()
    while True:
        c.poll()
""")



def test_entries_of_a_killed_consumer_are_claimed_and_applied(
        redis_url: str, redis_client: redis.Redis, write_config: Callable[[str], Path],
        make_cache: Callable[..., Cache], tmp_path: Path) -> None:
    config = write_config("")
    cache = make_cache(config)
    keys = [f"order:{i}" for i in range(N)]
    for key in keys:
        cache.set(key, {"v": 1}, ttl=300, version=1)
    redis_client.xgroup_create(INVALIDATION_STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    for key in keys:
        publish_invalidation(key, version=2, redis=redis_client)

    env = {**os.environ, "CACHEWARM_REDIS_URL": redis_url, "CACHEWARM_CONFIG": str(config),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    doomed = subprocess.run([sys.executable, "-c", DOOMED], env=env, timeout=60, capture_output=True)
    assert doomed.returncode == -9, doomed.stderr.decode()[-2000:]

    pending = redis_client.xpending(INVALIDATION_STREAM, CONSUMER_GROUP)
    assert pending["pending"] == N  # read by the dead consumer, never acknowledged
    assert all(cache.exists(key) for key in keys)  # and not applied

    settings = Settings.load(redis_url=redis_url, config=config, claim_idle_ms=200)
    survivor = InvalidationConsumer(settings, name="survivor", block_ms=100).start()
    try:
        wait_until(lambda: redis_client.xpending(INVALIDATION_STREAM, CONSUMER_GROUP)["pending"] == 0, 30,
                   "the survivor to claim and apply every pending entry", interval=0.02,
                   details=lambda: str(redis_client.xpending(INVALIDATION_STREAM, CONSUMER_GROUP)))
        assert survivor.alive
    finally:
        survivor.close()
    assert [key for key in keys if cache.exists(key)] == []
    # Every event was applied with its version: the version floor of each key is 2.
    assert {redis_client.hget(cache.layout.fence(key), "v") for key in keys} == {b"2"}
    assert survivor.stats["claimed"] >= N
    assert redis_client.xlen(DEAD_LETTER_STREAM) == 0
    # An older write-through can no longer put version 1 back.
    assert cache.set(keys[0], {"v": 1}, ttl=300, version=1) is False
