"""Helpers of the fault suite (importable by tests and, as python: sources, by worker processes)."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from typing import Any

import httpx

from tests.support.recording import RecordingState


class InFlightTransport(httpx.BaseTransport):
    """Counts source requests in flight per URL path, to check the single flight (one per key per process)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self._lock = threading.Lock()
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        with self._lock:
            self.requests += 1
            self.in_flight[path] += 1
            self.max_in_flight[path] = max(self.max_in_flight[path], self.in_flight[path])
        try:
            response = self._inner.handle_request(request)
            response.read()
            return response
        finally:
            with self._lock:
                self.in_flight[path] -= 1

    def close(self) -> None:
        self._inner.close()


def percentile(samples: list[float], q: float) -> float:
    """The q-quantile (0..1) of samples, nearest-rank."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


ITEM_CALLS: list[str] = []


def item_source(id: str) -> dict[str, Any] | None:
    """A python: source: {"id": id}, or no such item for ids starting with "none"."""
    ITEM_CALLS.append(id)
    return None if id.startswith("none") else {"id": id}


def requests_between(state: RecordingState, start: float, end: float) -> dict[str, list[float]]:
    return {item: [t for t in list(times) if start <= t < end] for item, times in list(state.times.items())}


def close_pairs(times: dict[str, list[float]], gap: float) -> int:
    """How many times a key was fetched again less than `gap` seconds after the previous fetch."""
    return sum(1 for ts in times.values() for a, b in itertools.pairwise(ts) if b - a < gap)
