"""Helpers of the fault suite: a product source, keyspace files, per-key in-flight accounting, percentiles."""

from __future__ import annotations

import textwrap
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from cachewarm.demo.source import SourceServer


@pytest.fixture
def source() -> Iterator[SourceServer]:
    """The demo product API in this process, 50 ms per read."""
    with SourceServer(latency=0.05) as server:
        yield server


@pytest.fixture
def keyspace_file(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str) -> Path:
        path = tmp_path / "cachewarm.toml"
        path.write_text(textwrap.dedent(text))
        return path

    return write


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
