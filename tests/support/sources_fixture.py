"""Python sources the tests' keyspace files point at (``python:tests.support.sources_fixture:NAME``)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from datetime import datetime
from typing import Any

calls: list[tuple[str, str]] = []
_lock = threading.Lock()


def price(region: str, id: str) -> dict[str, Any] | None:
    calls.append(("price", f"{region}:{id}"))
    return None if id == "missing" else {"region": region, "id": id, "price": 10}


async def aprice(id: str) -> dict[str, Any] | None:
    await asyncio.sleep(0)
    calls.append(("aprice", id))
    return None if id == "missing" else {"id": id, "async": True}


def broken(id: str) -> Any:
    raise RuntimeError(f"database down for {id}")


def not_json(id: str) -> Any:
    return {"when": datetime(2024, 1, 1)}


def slow_counted(id: str) -> dict[str, Any]:
    """Appends one line per call to $CACHEWARM_TEST_CALLS (shared across processes), then sleeps."""
    path = os.environ["CACHEWARM_TEST_CALLS"]
    with _lock, open(path, "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {id}\n")
    time.sleep(float(os.environ.get("CACHEWARM_TEST_DELAY", "0.5")))
    return {"id": id, "loaded_by": os.getpid()}


entered = threading.Event()
gate = threading.Event()


def gated(id: str) -> dict[str, Any]:
    """Signals `entered`, then waits for `gate`: lets a test act while a load is in flight."""
    entered.set()
    gate.wait(10)
    return {"id": id, "from": "source"}


counter: dict[str, int] = {}


def counted(id: str) -> dict[str, Any]:
    with _lock:
        counter[id] = counter.get(id, 0) + 1
        n = counter[id]
    return {"id": id, "n": n}
