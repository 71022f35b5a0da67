"""Refresh by value: the worth test's arithmetic and the budget's choice (pure logic; the scan's use of both is
tests/warming/test_scan_value.py)."""

from __future__ import annotations

import math

import pytest

from cachewarm.warming import budget
from cachewarm.warming.value import DEFAULT_MISS_COST, ValuePolicy, measured_miss_cost, policy_for, read_rate


def test_steady_reads_are_recovered_from_the_decayed_count() -> None:
    # one read a second for a long time: the forward-decayed count settles at half_life / ln 2
    decayed = sum(2 ** (-t / 60) for t in range(100_000))
    assert read_rate(decayed, 60) == pytest.approx(1.0, rel=0.01)


def test_a_key_below_the_exchange_rate_is_not_refreshed() -> None:
    policy = ValuePolicy(refresh_worth=0.025, miss_cost=0.05, period=4, half_life=60, floor=0.9)
    assert policy.min_reads() == pytest.approx(0.5)         # 25 ms of waiting at 50 ms a miss: half a read
    per_read = 60 / (math.log(2) * 4)                      # decayed count of one expected read per period
    assert not policy.pays(0.4 * per_read)                 # 0.4 expected reads: 20 ms saved, less than 25
    assert policy.pays(0.6 * per_read)
    assert policy.worth(0.6 * per_read) == pytest.approx(0.03)


def test_a_slower_source_makes_a_refresh_worth_more() -> None:
    fast = ValuePolicy(refresh_worth=0.025, miss_cost=0.01, period=4, half_life=60)
    slow = ValuePolicy(refresh_worth=0.025, miss_cost=0.5, period=4, half_life=60)
    assert slow.bound() < fast.bound()
    key = 0.2 * 60 / (math.log(2) * 4)  # 0.2 expected reads per period
    assert slow.pays(key) and not fast.pays(key)


def test_the_old_threshold_is_a_floor_and_worth_zero_is_the_old_policy() -> None:
    cheap = ValuePolicy(refresh_worth=0.0001, miss_cost=1.0, period=50, half_life=60, floor=2.0)
    assert cheap.bound() == 2.0 and not cheap.pays(2.0) and cheap.pays(2.01)
    old = ValuePolicy(refresh_worth=0, miss_cost=0.05, period=4, half_life=60, floor=0.9)
    assert old.bound() == 0.9


def test_the_miss_cost_is_set_else_measured_else_assumed() -> None:
    stats = {"fetch_us:product": 150_000.0, "fetches:product": 3.0}
    assert measured_miss_cost(stats, "product") == pytest.approx(0.05)
    assert measured_miss_cost(stats, "user") is None
    common = {"refresh_worth": 0.025, "ttl": 5.0, "refresh_ahead": 1.0, "half_life": 60.0, "floor": 0.9}
    assert policy_for(miss_cost=0.2, measured=0.05, **common).miss_cost == 0.2
    assert policy_for(miss_cost=None, measured=0.05, **common).miss_cost == 0.05
    assert policy_for(miss_cost=None, measured=None, **common).miss_cost == DEFAULT_MISS_COST
    assert policy_for(miss_cost=None, measured=None, **common).period == 4.0


def test_within_the_budget_the_more_valuable_key_wins() -> None:
    ranked = ["product:hot", "product:warm", "product:lukewarm"]  # most valuable first
    assert budget.choose(ranked, 2.7) == (["product:hot", "product:warm"], ["product:lukewarm"])
    assert budget.choose(ranked, 0.5) == ([], ranked)


def test_the_bucket_refills_at_the_budget_up_to_its_burst() -> None:
    assert budget.refill({}, "p", budget=10, scan_interval=0.25, now_ms=5_000) == 10  # new: full, 1 s worth
    state = budget.spent("p", 10, 8, now_ms=5_000)
    assert state == {"budget_tokens:p": 2, "budget_at_ms:p": 5_000}
    assert budget.refill(state, "p", budget=10, scan_interval=0.25, now_ms=5_250) == pytest.approx(4.5)
    assert budget.refill(state, "p", budget=10, scan_interval=0.25, now_ms=60_000) == 10
    assert budget.refill(state, "p", budget=10, scan_interval=2, now_ms=60_000) == 40  # two scans' worth
    assert budget.refill({}, "p", budget=0.2, scan_interval=0.25, now_ms=0) == 1  # at least one token
