"""Poison and malformed entries each land in the dead stream with a reason and are acknowledged; the good entries
around them are applied, and the consumer keeps running. An entry whose application keeps failing is retried until
it has been delivered more than max_deliveries times, then dead-lettered too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from cachewarm import Cache, Settings, publish_invalidation
from cachewarm.invalidation.consumer import InvalidationConsumer
from cachewarm.invalidation.events import Event, Rejected, parse_entry
from cachewarm.redis_layer.keys import CONSUMER_GROUP, DEAD_LETTER_STREAM, INVALIDATION_STREAM
from tests.support.redis_cluster import topologies
from tests.support.waiting import wait_until

POISON: list[tuple[dict[Any, Any], str]] = [
    ({"ts": "1700000000000"}, "missing field"),
    ({"note": "hello"}, "unknown field"),
    ({"key": "good:x", "tag": "t"}, "both key and tag"),
    ({"key": b"good:\xff\xfe"}, "not valid UTF-8"),
    ({b"\xc3\x28": "x"}, "not valid UTF-8"),
    ({"key": "k" * 1_000_000}, "too long"),
    ({"key": "good:y", "color": "red"}, "unknown field"),
    ({"key": "good:z", "version": "seven"}, "version must be a non-negative integer"),
    ({"key": "good:z", "version": "7.5"}, "version must be a non-negative integer"),
    ({"key": "good:z", "version": "-1"}, "version must be a non-negative integer"),
    ({"key": "good:z", "ts": "yesterday"}, "ts must be a non-negative integer"),
    ({"key": ""}, "non-empty"),
    ({"tag": "t", "version": "3"}, "key events only"),
]



@pytest.mark.parametrize(("fields", "reason"), POISON)
def test_parse_rejects_with_a_reason(fields: dict[Any, Any], reason: str) -> None:
    parsed = parse_entry(b"1-0", {k.encode() if isinstance(k, str) else k: v.encode() if isinstance(v, str) else v
                                  for k, v in fields.items()})
    assert isinstance(parsed, Rejected)
    assert reason in parsed.reason


def test_parse_accepts_the_wire_format() -> None:
    assert parse_entry(b"5-1", {b"key": b"product:42", b"version": b"7", b"ts": b"1700000000000"}) == \
        Event("5-1", "key", "product:42", 7, 1700000000000)
    assert parse_entry("5-2", {"tag": "products"}) == Event("5-2", "tag", "products")


@topologies
def test_poison_goes_to_the_dead_stream_and_good_entries_keep_flowing(
        redis_url: str, redis_client: redis.Redis, write_config: Callable[[str], Path],
        make_cache: Callable[..., Cache], topology: str) -> None:
    config = write_config("")
    cache = make_cache(config)
    settings = Settings.load(redis_url=redis_url, config=config, claim_idle_ms=100, max_deliveries=2,
                             redis_cluster=topology == "cluster")
    good: list[str] = []
    poison_ids: dict[str, str] = {}
    for i, (fields, reason) in enumerate(POISON):
        key = f"good:{i}"
        cache.set(key, {"i": i}, ttl=300)
        good.append(key)
        publish_invalidation(key, redis=redis_client)
        poison_ids[redis_client.xadd(INVALIDATION_STREAM, fields).decode()] = reason
    # An entry that parses but cannot be applied: the key's fence is not a hash (WRONGTYPE on every try).
    redis_client.set(cache.layout.fence("broken:1"), "not a hash")
    poison_ids[publish_invalidation("broken:1", redis=redis_client)] = "delivered 3 times"
    cache.set("good:last", {"i": -1}, ttl=300)
    good.append("good:last")
    publish_invalidation("good:last", redis=redis_client)

    consumer = InvalidationConsumer(settings, name="c1", block_ms=100).start()
    try:
        wait_until(lambda: redis_client.xlen(DEAD_LETTER_STREAM) == len(poison_ids)
                   and redis_client.xpending(INVALIDATION_STREAM, CONSUMER_GROUP)["pending"] == 0, 30,
                   "every poison entry dead-lettered and nothing pending", interval=0.02)
        # good entries published after the poison are still applied
        assert [key for key in good if cache.exists(key)] == []
        assert consumer.alive
        cache.set("good:after", {"i": 1}, ttl=300)
        publish_invalidation("good:after", redis=redis_client)
        wait_until(lambda: not cache.exists("good:after"), 30, "the invalidation after the poison", interval=0.02)
    finally:
        consumer.close()

    dead = {fields[b"original_id"].decode(): fields for _, fields in redis_client.xrange(DEAD_LETTER_STREAM)}
    assert set(dead) == set(poison_ids)
    for original_id, reason in poison_ids.items():
        assert reason in dead[original_id][b"reason"].decode(), dead[original_id][b"reason"]
    # the original fields travel with the reason (a huge one cut short)
    originals = dict(redis_client.xrange(INVALIDATION_STREAM))
    for original_id, fields in dead.items():
        for name, value in originals[original_id.encode()].items():
            copied = fields.get(name, fields.get(b"original:" + name))
            assert copied is not None and value.startswith(copied)
    assert consumer.stats["dead"] == len(poison_ids)
