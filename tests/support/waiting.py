"""The one way a test polls: `wait_until`, so every wait has a deadline and says what it waited for."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Every deadline is stretched by this factor: a deadline is there so that a broken test fails with a message rather
# than at pytest's timeout, never to judge speed, and a loaded CI host can be several times slower than a quiet one
# (seen: a sidecar taking more than 20 s to start beside two suites and two benchmarks on two cores).
PATIENCE = float(os.environ.get("CACHEWARM_TEST_PATIENCE", "3"))


def wait_until(condition: Callable[[], T], timeout: float, what: str, *, details: Callable[[], str] | None = None,
               interval: float = 0.05, ignore: tuple[type[Exception], ...] = ()) -> T:
    """Calls `condition` until it returns something truthy, and returns that; fails the test after `timeout` s.

    The failure names `what` and the last result, then `details()` (a log's tail, say). Exceptions listed in
    `ignore` (a server not listening yet) count as a falsy result. `timeout` is stretched by PATIENCE."""
    timeout *= PATIENCE
    deadline = time.monotonic() + timeout
    while True:
        last: object
        try:
            last = result = condition()
        except ignore as exc:
            last = exc
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            extra = f"\n{details()}" if details is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r}){extra}")
        time.sleep(interval)
