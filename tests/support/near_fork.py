"""Run as a script: a process with a near cache forks; parent and child must each hear Redis's pushes on a link of
their own (a child reading its parent's socket would split the pushes between them).

    python -m tests.support.near_fork REDIS_URL CONFIG

Prints one JSON line per process: the value each served after another client replaced the key in Redis.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import redis

from cachewarm import Cache, Settings
from cachewarm.redis_layer import envelope

KEY = "near:1"


def replace(writer: redis.Redis, value_key: str, version: int) -> None:
    """Another client (not a cachewarm one) writes a new value: only Redis's push can tell the near caches."""
    now = int(time.time() * 1000)
    writer.set(value_key, envelope.encode(json.dumps({"version": version}), fetched_ms=now, ttl_ms=600_000))


def main(url: str, config: str) -> None:
    cache = Cache(settings=Settings.load(redis_url=url, config=Path(config)))
    writer = redis.Redis.from_url(url)
    value_key = cache.layout.value(KEY)
    replace(writer, value_key, 1)
    cache.get(KEY)
    cache.get(KEY)  # the parent holds a copy, its link open
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        entries_at_fork = cache.near_figures()["near"]["entries"]
        cache.get(KEY)
        cache.get(KEY)  # the child's own copy, on its own link
        os.write(write, b"x")
        time.sleep(0.3)  # the writer replaces the value meanwhile
        print(json.dumps({"who": "child", "entries_at_fork": entries_at_fork, "value": cache.get(KEY),
                          "hits": cache.near_figures()["near"]["hits"]}), flush=True)
        os._exit(0)
    os.read(read, 1)
    replace(writer, value_key, 2)
    time.sleep(0.1)
    print(json.dumps({"who": "parent", "value": cache.get(KEY)}), flush=True)
    os.waitpid(pid, 0)
    cache.close()
    writer.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
