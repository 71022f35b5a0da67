"""What the demo source (source.py) holds: its items and their versions, the fault settings switched at runtime,
the counts of the reads it served, and the read itself (latency, injected errors, garbage)."""

from __future__ import annotations

import asyncio
import heapq
import json
import random
import time
from collections import Counter
from typing import Any

from aiohttp import web

from ..audit.checking import USER_AGENT as AUDIT_USER_AGENT

Json = dict[str, Any]

TOP_PATHS = 1000
# Distinct paths counted before new ones are lumped together: a scan of unknown ids cannot grow the stats.
MAX_TRACKED_PATHS = 200_000
OTHER_PATHS = "(other)"
GARBAGE_BODY = b"<html><body>502 Bad Gateway: upstream sent garbage</body></html>"
SETTING_NAMES = ("latency", "error_rate", "slow_rate", "slow_latency", "garbage_rate", "status_override", "seed")
RATE_NAMES = ("error_rate", "slow_rate", "garbage_rate")


def json_response(body: Json, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), status=status, content_type="application/json")


def _default_price(item_id: int) -> float:
    return round(1.0 + (item_id * 7919 % 100_000) / 100, 2)


class SourceSettings:
    """Latency and fault knobs; `update` validates a whole change before applying any of it."""

    def __init__(self, latency: float = 0.05) -> None:
        self.latency = latency
        self.error_rate = 0.0
        self.slow_rate = 0.0
        self.slow_latency = 1.0
        self.garbage_rate = 0.0
        self.status_override: int | None = None
        self.seed: int | None = None
        self.random = random.Random()
        self._check("latency", latency)

    @staticmethod
    def _check(name: str, value: Any) -> None:
        if name == "status_override":
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or not 100 <= value <= 599):
                raise ValueError("status_override must be an HTTP status (100..599) or null")
        elif name == "seed":
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError("seed must be an integer or null")
        elif not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a number >= 0")
        elif name in RATE_NAMES and value > 1:
            raise ValueError(f"{name} must be between 0 and 1")

    def update(self, changes: Json) -> None:
        unknown = sorted(set(changes) - set(SETTING_NAMES))
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(SETTING_NAMES)}")
        for name, value in changes.items():
            self._check(name, value)
        for name, value in changes.items():
            setattr(self, name, float(value) if name not in ("status_override", "seed") else value)
        if "seed" in changes:
            self.random.seed(self.seed)

    def as_dict(self) -> Json:
        return {name: getattr(self, name) for name in SETTING_NAMES}


class SourceState:
    """Items, settings and request statistics of one source; used only from its event loop."""

    def __init__(self, *, items: int = 100_000, latency: float = 0.05) -> None:
        self.items = items
        self.settings = SourceSettings(latency)
        # Items that were bumped, set or deleted; every other id in [0, items) has its default body.
        self._changed: dict[str, Json | None] = {}
        self.reset_stats()

    def reset_stats(self) -> None:
        self.requests = 0
        self.by_path: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.by_agent: Counter[str] = Counter()  # User-Agent's product name (the auditor's: cachewarm-audit)
        self.in_flight = 0
        self.max_in_flight = 0

    def stats(self) -> Json:
        return {
            "requests": self.requests,
            "by_path": dict(heapq.nlargest(TOP_PATHS, self.by_path.items(), key=lambda kv: kv[1])),
            "by_status": dict(self.by_status),
            "by_agent": dict(heapq.nlargest(TOP_PATHS, self.by_agent.items(), key=lambda kv: kv[1])),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }

    def get(self, item_id: str) -> Json | None:
        """The stored item (without `fetched_at`), or None when there is no such item."""
        if item_id in self._changed:
            return self._changed[item_id]
        if item_id.isdecimal() and item_id.isascii() and int(item_id) < self.items:
            return {"id": item_id, "name": f"Product {item_id}", "price": _default_price(int(item_id)),
                    "version": 1}
        return None

    def bump(self, item_id: str) -> Json | None:
        item = self.get(item_id)
        if item is None:
            return None
        version = int(item.get("version", 0)) + 1
        price = item.get("price")
        new_price = round(float(price) + 0.5, 2) if isinstance(price, int | float) else 1.0
        item = {**item, "price": new_price, "version": version}
        self._changed[item_id] = item
        return item

    def put(self, item_id: str, body: Json) -> Json:
        version = body.get("version")
        if version is None:
            old = self.get(item_id)
            version = int(old.get("version", 0)) + 1 if old is not None else 1
        elif not isinstance(version, int) or isinstance(version, bool):
            raise ValueError("version must be an integer")
        item = {**body, "id": item_id, "version": version}
        self._changed[item_id] = item
        return item

    def delete(self, item_id: str) -> bool:
        existed = self.get(item_id) is not None
        self._changed[item_id] = None
        return existed

    def _count_path(self, path: str) -> None:
        if path in self.by_path or len(self.by_path) < MAX_TRACKED_PATHS:
            self.by_path[path] += 1
        else:
            self.by_path[OTHER_PATHS] += 1

    async def read(self, request: web.Request) -> web.Response:
        """GET /products/{id} and /items/{id}: the slow, possibly faulty read."""
        self.requests += 1
        agent = request.headers.get("user-agent", "").split("/", 1)[0][:40]
        if agent in self.by_agent or len(self.by_agent) < MAX_TRACKED_PATHS:
            self.by_agent[agent] += 1
        if agent != AUDIT_USER_AGENT:  # per path: the cache's loads and refreshes (the auditor's checks: by_agent)
            self._count_path(request.path)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            response = await self._answer(request.match_info["id"])
        finally:
            self.in_flight -= 1
        self.by_status[str(response.status)] += 1
        return response

    async def _answer(self, item_id: str) -> web.Response:
        s = self.settings
        rnd = s.random.random
        delay = s.slow_latency if s.slow_rate and rnd() < s.slow_rate else s.latency
        if delay > 0:
            await asyncio.sleep(delay)
        if s.status_override is not None:
            return json_response({"error": "status override"}, s.status_override)
        if s.error_rate and rnd() < s.error_rate:
            return json_response({"error": "injected failure"}, 500)
        item = self.get(item_id)
        if item is None:
            return json_response({"error": "not found"}, 404)
        if s.garbage_rate and rnd() < s.garbage_rate:
            return web.Response(body=GARBAGE_BODY, content_type="application/json")
        return json_response({**item, "fetched_at": time.time()})
