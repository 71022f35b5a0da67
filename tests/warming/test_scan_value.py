"""The scan's choices by value against a real Redis: a key below the exchange rate is not claimed; within a
refresh budget the more valuable due keys are claimed and the rest counted as left out."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import redis

from cachewarm import Settings
from cachewarm.redis_layer.keys import KeyLayout
from cachewarm.warming.scan import scan
from tests.support.hot import seed_hot

L = KeyLayout()
# ttl 5, refresh ahead 1: a refresh period of 4 s; half-life 60 s: one expected read per period is a decayed count
# of 60 / (ln 2 * 4) = 21.6
PER_READ = 60 / (math.log(2) * 4)


def _settings(write_config: Callable[[str], Path], make_settings: Callable[..., Settings], extra: str) -> Settings:
    config = write_config(f"""
        [keyspaces.product]
        pattern = "product:{{id}}"
        source = "http://127.0.0.1:9/products/{{id}}"
        ttl = 5
        refresh_ahead = 1
        miss_cost = 0.05
        {extra}
    """)
    return make_settings(config, hot_threshold=0.9, hot_half_life=60.0, scan_interval=0.25)


def _now(client: redis.Redis) -> int:
    sec, usec = client.time()
    return int(sec) * 1000 + int(usec) // 1000


def _claimed(batches: list[list[str]]) -> list[str]:
    return sorted(k for batch in batches for k in batch)


def _stats(client: redis.Redis) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in client.hgetall(L.refresh_stats).items()}


def test_a_key_below_the_exchange_rate_is_not_refreshed(write_config: Callable[[str], Path],
                                                        make_settings: Callable[..., Settings],
                                                        redis_client: redis.Redis) -> None:
    # refresh_worth 0.025 s at a 50 ms miss: half an expected read per period pays, 0.4 does not
    settings = _settings(write_config, make_settings, "refresh_worth = 0.025")
    seed_hot(redis_client, L, "product", {"product:often": 0.6 * PER_READ, "product:seldom": 0.4 * PER_READ,
                                          "product:once": 1.0}, _now(redis_client))
    result = scan(redis_client, settings)
    assert _claimed(result.batches) == ["product:often"]   # all three are missing, so due
    assert _stats(redis_client)["worth_bound:product"] == round(0.5 * PER_READ, 4)
    # the old policy (worth 0) refreshes everything above the 0.9 threshold
    redis_client.delete(L.claim("product:often"))
    old = _settings(write_config, make_settings, "refresh_worth = 0")
    assert _claimed(scan(redis_client, old).batches) == ["product:often", "product:once", "product:seldom"]


def test_within_the_budget_the_more_valuable_key_wins(write_config: Callable[[str], Path],
                                                      make_settings: Callable[..., Settings],
                                                      redis_client: redis.Redis) -> None:
    settings = _settings(write_config, make_settings, "refresh_worth = 0.025\nrefresh_budget = 2")
    scores = {f"product:{i}": (i + 1) * PER_READ for i in range(5)}  # product:4 is the most read
    seed_hot(redis_client, L, "product", scores, _now(redis_client))
    first = scan(redis_client, settings)
    assert _claimed(first.batches) == ["product:3", "product:4"]  # a full bucket: 2 tokens (1 s of budget)
    assert first.keyspaces["product"].left_out == 3
    stats = _stats(redis_client)
    assert stats["left_out_keys:product"] == 3 and stats["left_out:product"] == 3
    assert stats["budget_tokens:product"] == 0
    # The bucket is empty: the next scan at once claims nothing and leaves the three out again.
    second = scan(redis_client, settings)
    assert second.batches == [] and second.keyspaces["product"].left_out == 3
    assert _stats(redis_client)["left_out:product"] == 6
