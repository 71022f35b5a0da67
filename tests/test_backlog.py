"""The scan's room in the refresh queue, bounded by the rate the workers take batches at (tasks/backlog.py)."""

from __future__ import annotations

from math import ceil

import pytest

from cachewarm import Settings
from cachewarm.tasks.backlog import FIRST_BATCHES, MAX_QUEUED_BATCHES, QUEUE_PERIODS, busy_target


@pytest.fixture
def settings() -> Settings:
    return Settings.load(scan_interval=1.0)


def record(at_ms: int, queued: int) -> bytes:
    return f"{at_ms} {queued}".encode()


def test_without_a_record_the_first_fill_is_small(settings: Settings) -> None:
    assert FIRST_BATCHES < MAX_QUEUED_BATCHES
    assert busy_target(settings, 0, None, 10_000) == FIRST_BATCHES
    assert busy_target(settings, 7, None, 10_000) == FIRST_BATCHES
    assert busy_target(settings, 7, b"garbage", 10_000) == FIRST_BATCHES


def test_a_busy_queue_is_filled_to_a_few_periods_of_the_measured_rate(settings: Settings) -> None:
    # 20 queued a second ago, 15 still waiting: the workers take 5 a period
    assert busy_target(settings, 15, record(9_000, 20), 10_000) == ceil(QUEUE_PERIODS * 5)
    # over two seconds: 2.5 a period
    assert busy_target(settings, 15, record(8_000, 20), 10_000) == ceil(QUEUE_PERIODS * 2.5)
    # nothing taken: nothing more queued (the target is below what waits)
    assert busy_target(settings, 20, record(9_000, 20), 10_000) == 0


def test_an_emptied_queue_grows_the_target_and_an_idle_one_is_unbounded(settings: Settings) -> None:
    # all 4 taken within the second: at least 4 a period, QUEUE_PERIODS of that allowed (more than before)
    assert busy_target(settings, 0, record(9_000, 4), 10_000) == ceil(QUEUE_PERIODS * 4) > 4
    assert busy_target(settings, 0, record(9_000, 0), 10_000) == MAX_QUEUED_BATCHES
    assert busy_target(settings, 0, record(9_000, 19), 10_000) == MAX_QUEUED_BATCHES  # capped
