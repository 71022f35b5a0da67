"""Scenario 10: hostile keys through get, set, delete and the invalidation stream.

100,000 random keys (unicode, lone surrogates, control characters, 10 KB long, glob characters, path traversal,
extra separators, non-strings). What must hold: an invalid key gets InvalidKey, an unmatched one UnknownKeyspace,
nothing else escapes; the HTTP source is only ever asked for one encoded segment under its URL template; metric
series and read counters stay keyed by the configured keyspace names; Redis keys stay under the prefix; the
invalidation consumer dead-letters what it cannot apply and keeps going.
"""

from __future__ import annotations

import multiprocessing
import random
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest

from cachewarm import Cache, InvalidKey, Settings, UnknownKeyspace
from cachewarm.demo.source import SourceServer
from cachewarm.hooks import set_hooks
from cachewarm.invalidation.consumer import InvalidationConsumer
from cachewarm.invalidation.publish import event_fields, publish_events
from cachewarm.metrics.cluster import ClusterCollector
from cachewarm.metrics.process import ProcessMetrics, PrometheusHooks
from cachewarm.redis_layer.keys import DEAD_LETTER_STREAM, HOT_SHARDS, INVALIDATION_STREAM, MAX_KEY_LENGTH, KeyLayout
from tests.faults import _support
from tests.faults._support import InFlightTransport
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

N_KEYS = 100_000
PROCESSES = 2  # the keys' loop is CPU bound (the client's share of each round trip): one process per core
THREADS = 2  # per process: a thread's round trip overlaps the other's work
N_HTTP = 1_500  # product: keys go to the HTTP source (slower); the rest use the python: source
GLOB = "*?[]\\^!{}"
TRAVERSAL = ["..", ".", "...", "../../_control", "..%2F..%2F_stats", "%2e%2e", "a/../../b", "/etc/passwd",
             "..\\..\\win", "?x=1", "#frag", "@evil.example", "//evil.example/x", " ", "%00", "http://evil/"]
CONTROL = "".join(map(chr, range(32))) + "\x7f"


def _text(rnd: random.Random, n: int) -> str:
    pools = ["abcXYZ0129-_.", "éüßñ中文字日本語한국어", "😀🔥👍🏽‍♀", "\u2028\u2029\u0085\u200b\ufeff", GLOB, "/%&=+ "]
    return "".join(rnd.choice(rnd.choice(pools)) for _ in range(n))


def hostile_keys(seed: int = 6) -> list[Any]:
    """About a fifth valid (they reach Redis and the sources), the rest refused before any I/O."""
    rnd = random.Random(seed)
    keys: list[Any] = []
    for i in range(N_KEYS):
        kind = i % 20
        if i < N_HTTP:
            seg = rnd.choice([*TRAVERSAL, _text(rnd, rnd.randint(1, 12)), str(rnd.randrange(200))])
            keys.append(f"product:{seg}")
        elif kind < 2:
            keys.append(f"item:{_text(rnd, rnd.randint(1, 40)).replace(':', '')}")
        elif kind == 2:
            keys.append(rnd.choice([f"item:{rnd.choice(TRAVERSAL)}{i}", f"item:none{_text(rnd, 5)}",
                                    f"item:{{id}}{i}", f"item:%s%n{i}", f"item:{{0.__class__}}{i}",
                                    "item:" + "x" * (MAX_KEY_LENGTH - 5)]))
        elif kind == 3:  # an extra separator or an unknown keyspace: no keyspace matches
            keys.append(rnd.choice([f"item:a:{i}", f"nope:{i}", f"{_text(rnd, 8)}", "item:", f":{i}"]))
        elif kind < 8:  # control characters somewhere
            text = list(_text(rnd, 10))
            text.insert(rnd.randrange(len(text) + 1), rnd.choice(CONTROL))
            keys.append("item:" + "".join(text))
        elif kind < 12:  # 10 KB long
            keys.append("item:" + _text(rnd, 10) * 1024)
        elif kind < 16:  # lone surrogates: valid Python str, not encodable as UTF-8
            keys.append("item:" + rnd.choice(["\ud800", "a\udfff", "\udc80x"]) + str(i))
        else:
            keys.append(rnd.choice(["", None, b"item:1", 42, ("item", 1), "item:\x00"]))
    return keys


def expected_invalid(key: Any) -> bool:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        return True
    if re.search(r"[\x00-\x1f\x7f]", key):
        return True
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def refused_by_source(key: Any) -> bool:
    """A product key whose parameter cannot be one path segment ("..", "."): refused when it would be fetched."""
    return isinstance(key, str) and key.startswith("product:") and key.removeprefix("product:").strip(".") == ""


def _shard(key: Any, shards: int) -> int:
    """The same for equal keys in every process (str hashes are salted per process)."""
    return zlib.crc32(repr(key).encode("utf-8", "surrogatepass")) % shards


@dataclass
class ShareResult:
    """What one process saw of its share of the keys."""

    outcomes: Counter[str]
    wrong: list[tuple[str, Any, str]]  # the first 100
    wrong_kinds: Counter[tuple[str, str]]  # all of them
    paths: list[str]  # asked of the HTTP source
    requests: int
    item_calls: list[str]  # the python: source's arguments
    exposition: str  # the process's Prometheus metrics


def _check_share(redis_url: str, config: Path, share: int) -> ShareResult:
    """In a process of its own (spawned): the keys of this share through a Cache with its own HTTP transport and
    metrics, over THREADS threads (a key always in the same one, in order)."""
    settings = Settings.load(redis_url=redis_url, config=config, stats_flush_interval=0.5)
    transport = InFlightTransport()
    registry = CollectorRegistry(auto_describe=False)
    set_hooks(PrometheusHooks(ProcessMetrics(registry)))
    redis_client = redis.Redis.from_url(redis_url)
    cache = Cache(settings=settings, http=httpx.Client(transport=transport, timeout=5.0))
    _support.ITEM_CALLS.clear()
    mine = [k for k in hostile_keys() if _shard(k, PROCESSES) == share]
    outcomes: Counter[str] = Counter()
    wrong: list[tuple[str, Any, str]] = []
    try:
        parts = [[k for k in mine if _shard(k, PROCESSES * THREADS) // PROCESSES == n] for n in range(THREADS)]
        with ThreadPoolExecutor(THREADS) as pool:
            for part_outcomes, part_wrong in pool.map(
                    lambda part: _check_keys(cache, settings, redis_client, part), parts):
                outcomes += part_outcomes
                wrong += part_wrong
        cache.flush_stats()
    finally:
        cache.close()
        redis_client.close()
    kinds = Counter((op, why.split("(")[0]) for op, _, why in wrong)
    return ShareResult(outcomes, wrong[:100], kinds, list(transport.max_in_flight), transport.requests,
                       list(_support.ITEM_CALLS), generate_latest(registry).decode())


def _check_keys(cache: Cache, settings: Settings, redis_client: redis.Redis,
                keys: list[Any]) -> tuple[Counter[str], list[tuple[str, Any, str]]]:
    """Each key through get, set, delete and publish: the outcomes, and what went wrong."""
    outcomes: Counter[str] = Counter()
    wrong: list[tuple[str, Any, str]] = []
    events: list[dict[str, str]] = []
    for key in keys:
        for op in ("get", "set", "delete", "publish"):
            invalid = expected_invalid(key) or (op == "get" and refused_by_source(key))
            try:
                if op == "get":
                    result: Any = cache.get(key)
                elif op == "set":
                    result = cache.set(key, {"set": True}, ttl=30)
                elif op == "delete":
                    result = cache.delete(key)
                else:
                    events.append(event_fields(key))
                    result = None
            except InvalidKey as exc:
                outcomes[f"{op}:InvalidKey"] += 1
                if len(str(exc)) > 300:
                    wrong.append((op, key, "error message too long"))
                if not invalid:
                    wrong.append((op, key, "InvalidKey for a valid key"))
                continue
            except UnknownKeyspace:
                outcomes[f"{op}:UnknownKeyspace"] += 1
                if invalid or op != "get" or settings.keyspaces.find(key) is not None:
                    wrong.append((op, key, "UnknownKeyspace"))
                continue
            except ValueError as exc:  # publish_invalidation(None): "give exactly one of key and tag"
                outcomes[f"{op}:ValueError"] += 1
                if not (op == "publish" and key is None):
                    wrong.append((op, key, repr(exc)[:200]))
                continue
            except Exception as exc:
                wrong.append((op, key, repr(exc)[:200]))
                continue
            outcomes[f"{op}:ok"] += 1
            if invalid:
                wrong.append((op, key, "accepted"))
            elif op == "get" and key.startswith("item:"):
                seg = key.removeprefix("item:")
                if result != (None if seg.startswith("none") else {"id": seg}):
                    wrong.append((op, key, f"value {result!r}"))
            elif op == "get" and key.startswith("product:"):
                seg = key.removeprefix("product:")
                if result is not None and result.get("id") != seg:
                    wrong.append((op, key, f"value {result!r}"))
        if len(events) >= 1000:
            publish_events(events, redis=redis_client, settings=settings)
            events.clear()
    publish_events(events, redis=redis_client, settings=settings)
    return outcomes, wrong


def test_hostile_keys_get_clear_errors_and_never_escape_the_templates(
        redis_url: str, redis_client: redis.Redis, write_config: Callable[[str], Path], source: SourceServer) -> None:
    _run(redis_url, redis_client, write_config, source)


def _run(redis_url: str, redis_client: redis.Redis, write_config: Callable[[str], Path],
         source: SourceServer) -> None:
    config = write_config(f"""
        [keyspaces.product]
        pattern = "product:{{id}}"
        source = "{source.url}/products/{{id}}"
        ttl = 60
        max_tracked = 1000

        [keyspaces.item]
        pattern = "item:{{id}}"
        source = "python:tests.faults._support:item_source"
        ttl = 60
        tags = ["t-{{id}}"]
        max_tracked = 1000
    """)
    settings = Settings.load(redis_url=redis_url, config=config, stats_flush_interval=0.5)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(redis_client, settings.keyspaces.names()))

    outcomes: Counter[str] = Counter()
    wrong: list[tuple[str, Any, str]] = []
    kinds: Counter[tuple[str, str]] = Counter()
    paths: list[str] = []
    requests = 0
    item_calls: list[str] = []
    expositions = []
    started = time.monotonic()
    # PROCESSES spawned processes share the keys (a key always in the same one): the loop is CPU bound.
    with ProcessPoolExecutor(PROCESSES, mp_context=multiprocessing.get_context("spawn")) as pool:
        for share in pool.map(_check_share, [redis_url] * PROCESSES, [config] * PROCESSES, range(PROCESSES)):
            outcomes += share.outcomes
            wrong += share.wrong
            kinds += share.wrong_kinds
            paths += share.paths
            requests += share.requests
            item_calls += share.item_calls
            expositions.append(share.exposition)
    elapsed = time.monotonic() - started
    expositions.append(generate_latest(registry).decode())

    assert not wrong, f"{kinds.total()} wrong outcomes {kinds}, first: {wrong[:5]}"
    assert outcomes["get:ok"] > 8_000 and outcomes["get:InvalidKey"] > 70_000, outcomes

    # The HTTP source was asked only for /products/<one encoded segment>, and only on its read route.
    assert paths, "no HTTP request was made"
    for path in paths:
        assert path.startswith("/products/") and path.count("/") == 2 and "?" not in path and "#" not in path, path
        assert unquote(path.removeprefix("/products/")).strip(".") != "", path
    stats = source.stats()
    assert stats["requests"] == requests
    assert all(p.startswith("/products/") for p in stats["by_path"])
    # The python: source got exactly the key's segment.
    assert all(":" not in p and not re.search(r"[\x00-\x1f\x7f]", p) for p in item_calls)

    # Bounded series: read counters, hot sets and metric labels are keyed by configured keyspace names only.
    names = {"product", "item"}
    fields = {f.decode().split(":")[1] for f in redis_client.hkeys(settings.key_prefix + "stats")}
    assert fields <= names, fields
    exposition = "\n".join(expositions)
    labels = set(re.findall(r'keyspace="([^"]*)"', exposition))
    assert labels <= names, labels
    series = {line.rsplit(" ", 1)[0] for line in exposition.splitlines() if line and not line.startswith("#")}
    assert len(series) < 200, len(series)  # distinct series over the processes
    hot = {k.decode() for k in redis_client.scan_iter(match=f"{settings.key_prefix}hot:*", count=1000)}
    layout = KeyLayout(settings.key_prefix)
    shards = {name for n in names for i in range(HOT_SHARDS) for name in (layout.hot(n, i), layout.hot_epoch(n, i))}
    assert hot <= shards, hot
    assert sum(redis_client.zcard(layout.hot("item", i)) for i in range(HOT_SHARDS)) <= 1000
    outside = [k for k in redis_client.scan_iter(count=10_000) if not k.startswith(b"cachewarm:")]
    assert not outside, outside[:5]

    # The consumer applies what it can, dead-letters raw hostile entries another language might write.
    raw_hostile: list[dict[bytes, bytes]] = [
        {b"key": b"\xff\xfe"}, {b"key": b"item:\x00"}, {b"key": b"x" * 10_240}, {b"tag": b""},
        {b"key": b"item:1", b"tag": b"t"}, {b"evil": b"1"}, {b"key": b"item:1", b"version": b"-1"},
        {b"key": b"item:1", b"version": b"1e400"}, {b"\xff": b"item:1"},
    ]
    for fields_ in raw_hostile:
        redis_client.xadd(INVALIDATION_STREAM, fields_)  # type: ignore[arg-type]
    consumer = InvalidationConsumer(settings, block_ms=50)
    try:
        wait_until(lambda: not consumer.poll(block_ms=50), 60, "the consumer to read the stream to its end",
                   interval=0)  # each poll returns at once while entries remain
    finally:
        consumer.close()
    info: Any = redis_client.xinfo_groups(INVALIDATION_STREAM)
    assert info[0]["pending"] == 0 and info[0]["lag"] == 0, info
    assert redis_client.xlen(DEAD_LETTER_STREAM) == len(raw_hostile)
    print(f"\n{N_KEYS} keys x get/set/delete/publish in {elapsed:.1f} s; outcomes {dict(outcomes)}; "
          f"{requests} HTTP requests, {len(item_calls)} python-source calls")
