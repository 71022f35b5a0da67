"""Scenario 4: `kill -9` of a worker while it handles invalidations and refresh batches.

A burst of versioned invalidations (the source's items change, then the writer publishes) is in flight and the
refreshes of hot keys are running when the worker's whole process group is killed with SIGKILL. A new worker
must claim what the dead one left pending; afterwards no event is lost (every cached value carries the latest
version) and nothing older was written back (the version floor holds).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cachewarm import Cache, Settings
from cachewarm.demo.redis_server import RedisServer
from cachewarm.demo.source import SourceServer
from cachewarm.invalidation.publish import event_fields, publish_events
from cachewarm.redis_layer import envelope
from cachewarm.redis_layer.keys import INVALIDATION_STREAM, KeyLayout
from tests.support.processes import Processes, cluster_env
from tests.support.recording import recorded
from tests.support.redis_cluster import raw_client, topologies
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

N = 200
ROUNDS = 10
L = KeyLayout()


@topologies
@pytest.mark.source(latency=0.05, recording=True)
def test_kill_9_during_invalidations_and_refreshes_loses_nothing(tmp_path: Path, write_config: Callable[[str], Path],
                                                                 source: SourceServer, topology: str,
                                                                 request: pytest.FixtureRequest) -> None:
    state = recorded(source)
    config = write_config(f"""
        [keyspaces.product]
        pattern = "product:{{id}}"
        source = "{source.url}/products/{{id}}"
        ttl = 30
        refresh_ahead = 10
        refresh_worth = 0  # every key above the hot threshold (the policy these reads were written for)
        max_stale = 30
        version_field = "version"
    """)
    keys = [f"product:{i}" for i in range(N)]
    with RedisServer() as server:  # the broker; the cache too, unless it is the session's Redis Cluster
        cache_url = request.getfixturevalue("redis_url") if topology == "cluster" else server.url(0)
        cluster = topology == "cluster"
        env = cluster_env(tmp_path, redis_url=cache_url, broker_url=server.url(1), config=config,
                          CACHEWARM_SCAN_INTERVAL="0.25", CACHEWARM_HOT_HALF_LIFE="60", CACHEWARM_HOT_THRESHOLD="1",
                          CACHEWARM_CLAIM_IDLE_MS="1000", CACHEWARM_REDIS_CLUSTER=str(cluster).lower())
        settings = Settings.load(redis_url=cache_url, config=config, hot_half_life=60.0, redis_cluster=cluster)
        procs = Processes(tmp_path, env)
        client = raw_client(cache_url, topology)
        try:
            first = procs.worker(log="worker1.log", concurrency=2)
            procs.beat()
            wait_until(lambda: "ready" in procs.log("worker1.log"), 30, "the first worker to be ready",
                       details=procs.logs)
            with Cache(settings=settings) as cache:
                for _ in range(3):
                    for key in keys:
                        cache.get(key)
                cache.flush_stats()
            wait_until(lambda: client.exists(INVALIDATION_STREAM) == 1, 20, "the invalidation group",
                       details=procs.logs)

            latest: dict[str, int] = {}

            def publish_round() -> None:
                events = []
                for i in range(N):
                    item = source.bump(i)
                    latest[keys[i]] = int(item["version"])
                    events.append(event_fields(keys[i], version=int(item["version"])))
                publish_events(events, redis=client, settings=settings)

            def pending() -> bool:
                groups: Any = client.xinfo_groups(INVALIDATION_STREAM)
                return bool(groups[0]["pending"] > 0)

            def drained() -> bool:
                groups: Any = client.xinfo_groups(INVALIDATION_STREAM)
                return all(g["pending"] == 0 and g["lag"] == 0 for g in groups)

            def versions() -> dict[str, int | None]:
                pipe = client.pipeline(transaction=False)  # one GET per key: a cluster has them in many slots
                for key in keys:
                    pipe.get(L.value(key))
                raws = pipe.execute()
                return {k: (envelope.decode(r).version if r is not None else None)
                        for k, r in zip(keys, raws, strict=True)}

            worker = first
            # Kill 1: entries delivered but not acknowledged (invalidation handling in flight).
            # Kill 2: the hot keys' refreshes in flight at the source (a refresh batch).
            for n, (when, what) in enumerate(((pending, "invalidations"), (lambda: state.in_flight > 0,
                                                                           "refreshes")), start=2):
                for round_ in range(ROUNDS):
                    publish_round()
                    if round_ == ROUNDS // 2:
                        deadline = time.monotonic() + 3
                        while time.monotonic() < deadline and not when():
                            time.sleep(0.002)
                        in_flight = state.in_flight
                        os.killpg(worker.pid, signal.SIGKILL)
                        worker.wait(10)
                        groups: Any = client.xinfo_groups(INVALIDATION_STREAM)
                        at_kill = {"pending": groups[0]["pending"], "lag": groups[0]["lag"],
                                   "source_in_flight": in_flight}
                restarted = time.monotonic()
                worker = procs.worker(log=f"worker{n}.log", concurrency=2)
                wait_until(drained, 60, f"the group to drain after the kill during {what}", details=procs.logs,
                           interval=0.1)
                recovery = time.monotonic() - restarted
                # No stale write: a cached value is never older than the latest published version.
                for _ in range(10):
                    stale = {k: v for k, v in versions().items() if v is not None and v < latest[k]}
                    assert not stale, f"{len(stale)} keys went back to an older version: {list(stale.items())[:5]}"
                    time.sleep(0.2)
                floors = [int(client.hget(L.fence(k), "v") or -1) for k in keys]
                assert all(f == latest[k] for f, k in zip(floors, keys, strict=True)), "a version floor is missing"
                with Cache(settings=settings) as cache:
                    served = [cache.get(k)["version"] for k in keys]
                assert served == [latest[k] for k in keys]
                log = procs.log(f"worker{n}.log")
                claimed = sum(int(line.split(" claimed ")[1].split()[0]) for line in log.splitlines()
                              if " claimed " in line and "idle entries" in line)
                print(f"\nkill -9 during {what} {at_kill}: group drained {recovery:.2f} s after the new worker "
                      f"started; events lost 0; stale writes 0; entries claimed from the dead worker {claimed}")
        finally:
            procs.stop()
            client.close()
