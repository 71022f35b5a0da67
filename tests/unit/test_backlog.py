"""The scan's room in the refresh queue, bounded by the rate the workers take batches at (tasks/backlog.py)."""

from __future__ import annotations

from math import ceil

import pytest

from cachewarm import Settings
from cachewarm.tasks.backlog import FIRST_BATCHES, MAX_QUEUED_BATCHES, QUEUE_PERIODS, busy_target, first_batches


@pytest.fixture
def settings() -> Settings:
    return Settings.load(scan_interval=1.0)


def record(at_ms: int, queued: int) -> bytes:
    return f"{at_ms} {queued}".encode()


def test_without_a_record_the_first_fill_is_small(settings: Settings) -> None:
    first = first_batches(settings)
    assert first < MAX_QUEUED_BATCHES
    assert busy_target(settings, 0, None, 10_000) == first
    assert busy_target(settings, 7, None, 10_000) == first
    assert busy_target(settings, 7, b"garbage", 10_000) == first


def test_the_first_fill_is_bounded_in_keys_too() -> None:
    """Large batches make fewer first batches (no more keys than FIRST_KEYS); small ones at most FIRST_BATCHES."""
    assert first_batches(Settings.load(refresh_batch_size=200)) == FIRST_BATCHES
    assert first_batches(Settings.load(refresh_batch_size=10)) == FIRST_BATCHES
    assert first_batches(Settings.load(refresh_batch_size=500)) == 4
    assert first_batches(Settings.load(refresh_batch_size=100_000)) == 1


def test_a_busy_queue_is_filled_to_a_few_periods_of_the_measured_rate(settings: Settings) -> None:
    # 20 queued a second ago, 15 still waiting: the workers take 5 a period
    assert busy_target(settings, 15, record(9_000, 20), 10_000) == ceil(QUEUE_PERIODS * 5)
    # over two seconds: 2.5 a period
    assert busy_target(settings, 15, record(8_000, 20), 10_000) == ceil(QUEUE_PERIODS * 2.5)
    # nothing taken: nothing more queued (the target is below what waits)
    assert busy_target(settings, 20, record(9_000, 20), 10_000) == 0


def test_a_scan_in_the_same_millisecond_as_the_last_record_adds_nothing_untaken(settings: Settings) -> None:
    # two scans back to back: no time to measure a rate in, and nothing was taken: nothing more is queued
    assert busy_target(settings, 8, record(10_000, 8), 10_000) == 0
    # a clock behind the recording host's: what was taken counts over half a period
    assert busy_target(settings, 6, record(10_500, 8), 10_000) == ceil(QUEUE_PERIODS * 2 * 2)


def test_an_emptied_queue_grows_the_target_and_an_idle_one_starts_a_wave(settings: Settings) -> None:
    # all 4 taken within the second: at least 4 a period, QUEUE_PERIODS of that allowed (more than before)
    assert busy_target(settings, 0, record(9_000, 4), 10_000) == ceil(QUEUE_PERIODS * 4) > 4
    # nothing queued last time, nothing waiting: the workers were idle, their rate is not known (a new wave)
    assert busy_target(settings, 0, record(9_000, 0), 10_000) == first_batches(settings)
    assert busy_target(settings, 0, record(9_000, 19), 10_000) == MAX_QUEUED_BATCHES  # capped
