"""Redis Sentinel for the cache (``redis+sentinel://``) and for the broker (Celery's ``sentinel://``): the URL
forms, then a failover of each under load, with real workers, beat and a private Sentinel group
(tests/support/sentinel.py: master, replica, three sentinels)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cachewarm import Cache, Settings
from cachewarm.demo.redis_server import RedisServer
from cachewarm.demo.source import SourceServer
from cachewarm.errors import ConfigError
from cachewarm.redis_layer import envelope
from cachewarm.redis_layer.connections import sync_client
from cachewarm.redis_layer.keys import KeyLayout
from cachewarm.redis_layer.sentinel import broker_url_for, parse
from cachewarm.settings import mask_url
from cachewarm.worker.celery_app import transport_options
from cachewarm.worker.consumer import RETRY_MAX
from tests.support.keyspaces import product_keyspace, write_config
from tests.support.processes import Processes, cluster_env
from tests.support.recording import recorded
from tests.support.sentinel import MASTER, SentinelGroup
from tests.support.waiting import wait_until

L = KeyLayout()
SCAN, TTL, AHEAD = 0.25, 2.0, 1.0
PERIOD = TTL - AHEAD
KEYS = [f"product:{i}" for i in range(20)]


def test_sentinel_urls_parse_default_and_mask() -> None:
    url = "redis+sentinel://app:s3cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/2"
    parts = parse(url)
    assert parts.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert (parts.master, parts.db, parts.username, parts.password) == ("mymaster", 2, "app", "s3cret")
    settings = Settings.load(redis_url=url)
    # No broker given: database 1 of the same master through the same sentinels, in Celery's form.
    assert settings.broker_url == ("sentinel://app:s3cret@10.0.0.1:26379/1;sentinel://app:s3cret@10.0.0.2:26379/1;"
                                   "sentinel://app:s3cret@[::1]:26380/1")
    assert settings.broker_sentinel_master == "mymaster"
    assert transport_options(settings)["master_name"] == "mymaster"
    assert "s3cret" not in mask_url(settings.redis_url) and "s3cret" not in mask_url(settings.broker_url)
    assert broker_url_for("redis+sentinel://h:1/m")[0] == "sentinel://h:1/1"
    given = Settings.load(broker_url="sentinel://h:1;sentinel://h:2", broker_sentinel_master="other")
    assert transport_options(given)["master_name"] == "other"
    assert "master_name" not in transport_options(Settings.load(broker_url="amqp://guest:guest@h:5672//"))
    for bad, says in [("redis+sentinel://h:1", "CACHEWARM_REDIS_URL: names no master"),
                      ("redis+sentinel:///m/0", "CACHEWARM_REDIS_URL: names no sentinel"),
                      ("redis+sentinel://h:x/m/0", "port is not a number"),
                      ("redis+sentinel://h:1/m/zero", "database 'zero' is not a number")]:
        with pytest.raises(ConfigError, match=says):
            Settings.load(redis_url=bad)
    with pytest.raises(ConfigError, match="CACHEWARM_BROKER_SENTINEL_MASTER: needed by a sentinel:// broker"):
        Settings.load(broker_url="sentinel://h:1;sentinel://h:2")
    with pytest.raises(ConfigError, match="CACHEWARM_BROKER_URL: must be a Celery broker URL"):
        Settings.load(broker_url="http://h/")


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    with SentinelGroup() as made:
        yield made


def _loaded(client: redis.Redis, since_ms: int = 0) -> bool:
    raws = client.mget([L.value(k) for k in KEYS])
    return all(raw is not None and envelope.fetched_ms(raw) > since_ms for raw in raws)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.source(latency=0.02)
def test_cache_master_failover_under_reads_and_refreshes(tmp_path: Path, source: SourceServer,
                                                         group: SentinelGroup) -> None:
    config = write_config(tmp_path, product_keyspace(source.url, ttl=TTL, refresh_ahead=AHEAD))
    with RedisServer() as broker:
        env = cluster_env(tmp_path, redis_url=group.url(0), broker_url=broker.url(0), config=config,
                          CACHEWARM_SCAN_INTERVAL=str(SCAN))
        procs = Processes(tmp_path, env)
        client = sync_client(group.url(0), timeout=1.0)  # through the sentinels too: follows the failover
        try:
            client.sadd(L.pinned("product"), *KEYS)
            worker, beat = procs.worker(concurrency=2), procs.beat()
            wait_until(lambda: _loaded(client), 40, "the pinned keys loaded through Sentinel", details=procs.logs,
                       ignore=(redis.RedisError,))
            settings = Settings.load(redis_url=group.url(0), config=config)
            stop = threading.Event()
            errors: list[BaseException] = []
            reads: list[bool] = []
            last_bump = [0.0]

            def reader(seed: int) -> None:
                rng = random.Random(seed)
                with Cache(settings=settings) as cache:
                    while not stop.is_set():
                        try:
                            reads.append(cache.lookup(rng.choice(KEYS)).hit)
                        except BaseException as exc:  # the failure this test looks for
                            errors.append(exc)
                        time.sleep(0.005)

            def bumper() -> None:  # the source keeps changing: the cache must end up equal to it
                while not stop.wait(0.1):
                    source.bump(random.randrange(len(KEYS)))
                    last_bump[0] = time.time()

            threads = [threading.Thread(target=reader, args=(n,)) for n in range(3)]
            threads.append(threading.Thread(target=bumper))
            for t in threads:
                t.start()
            try:
                time.sleep(1)
                killed = time.monotonic()
                old = group.kill_master()
                promoted = group.wait_failover(old)
                promoted_ms = int(time.time() * 1000)
                # The workers write to the new master without a restart: every key refreshed there.
                wait_until(lambda: _loaded(client, promoted_ms), 30, "refreshes on the new master",
                           details=procs.logs, ignore=(redis.RedisError,))
                resumed = time.monotonic()
                time.sleep(1)
            finally:
                stop.set()
                for t in threads:
                    t.join()
            quiet_ms = int(last_bump[0] * 1000) + 1
            wait_until(lambda: _loaded(client, quiet_ms), 20, "every key refreshed after the last change",
                       details=procs.logs)
            values = [envelope.value_and_fetched(raw)[0] if raw else None
                      for raw in client.mget([L.value(k) for k in KEYS])]
            cached = {k: (v["price"], v.get("version")) if v else None for k, v in zip(KEYS, values, strict=True)}
            items = {k: source.state.get(k.split(":")[1]) or {} for k in KEYS}
            current = {k: (item.get("price"), item.get("version")) for k, item in items.items()}
            print(f"\nSentinel cache failover: new master {promoted - killed:.2f} s after the kill, every key "
                  f"refreshed on it {resumed - promoted:.2f} s later; {len(reads)} reads, "
                  f"{reads.count(False)} misses, {len(errors)} exceptions; cache == source after quiescence")
            assert errors == [], errors[:3]
            assert cached == current
            assert worker.poll() is None and beat.poll() is None, procs.logs()
        finally:
            procs.stop()
            client.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.source(latency=0.01, recording=True)
def test_broker_master_failover_loses_no_refresh(tmp_path: Path, source: SourceServer,
                                                 group: SentinelGroup) -> None:
    state = recorded(source)
    config = write_config(tmp_path, product_keyspace(source.url, ttl=TTL, refresh_ahead=AHEAD))
    with RedisServer() as cache_server:
        env = cluster_env(tmp_path, redis_url=cache_server.url(0), broker_url=group.celery_url(0), config=config,
                          CACHEWARM_BROKER_SENTINEL_MASTER=MASTER, CACHEWARM_SCAN_INTERVAL=str(SCAN))
        procs = Processes(tmp_path, env)
        client = redis.Redis.from_url(cache_server.url(0))
        try:
            client.sadd(L.pinned("product"), *KEYS)
            worker, beat = procs.worker(concurrency=2), procs.beat()
            wait_until(lambda: all(len(state.times[k.split(":")[1]]) >= 2 for k in KEYS), 40,
                       "every key refreshed twice over the Sentinel broker", details=procs.logs)
            killed = time.monotonic()
            old = group.kill_master()
            up = group.wait_failover(old)

            def refreshed_since(t: float) -> bool:
                return all(any(x >= t for x in state.times[k.split(":")[1]]) for k in KEYS)

            wait_until(lambda: refreshed_since(up), 30, "every key refreshed after the new master is up",
                       details=lambda: procs.logs() + group.logs())
            after = [min(x for x in state.times[k.split(":")[1]] if x >= up) - up for k in KEYS]
            gaps = [b - a for k in KEYS for a, b in zip(state.times[k.split(":")[1]],
                                                        state.times[k.split(":")[1]][1:], strict=False)
                    if a >= killed - PERIOD]
            print(f"\nSentinel broker failover: new master {up - killed:.2f} s after the kill; first refresh "
                  f"{min(after):.2f} s after it was up, every key refreshed by {max(after):.2f} s (scan {SCAN} s, "
                  f"period {PERIOD} s); longest gap between two refreshes of a key {max(gaps):.2f} s")
            # Every key was due when the new master came up (the outage outlasted the period): all refreshed
            # within one scan period of the worker's next reconnection attempt (worker/consumer.py), plus 1 s of
            # slack for a loaded machine.
            assert max(after) <= SCAN + RETRY_MAX + 1.0, after
            assert worker.poll() is None and beat.poll() is None, procs.logs()
        finally:
            procs.stop()
            client.close()
