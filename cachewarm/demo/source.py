"""A slow HTTP "product API" for the demo, the end-to-end tests and the benchmarks.

Reads (`GET /products/{id}`, alias `GET /items/{id}`) answer after a configurable latency, and faults can be
switched on at runtime, so the cache can be shown (and tested) against a source that is slow, flaky or wrong:

    POST /_control              {"latency": 0.05, "error_rate": 0.1, "slow_rate": 0.01, "slow_latency": 2,
                                 "garbage_rate": 0, "status_override": null, "seed": 1}   (any subset)
    GET  /_control              current settings
    POST /_control/bump/{id}    a writer commits a change: version + 1, new price; returns the new item
    POST /_control/bump         {"ids": [...]}: many writers' commits at once (each one a bump, in order);
                                returns {"versions": [...]} (null for an unknown id)
    PUT  /_control/item/{id}    set an item's body (its version from the body's "version" when present)
    DELETE /_control/item/{id}  the item no longer exists (reads answer 404)
    GET  /_stats                {"requests", "by_path" (top 1000), "by_status", "in_flight", "max_in_flight"}
    POST /_stats/reset

Only reads are counted in the stats: they are the load the cache puts on the source.

Run it with `python -m cachewarm.demo.source --port 8000 --latency 0.05`, in-process with `SourceServer`, or
in a child process with `source_process.SourceProcess` (what the benchmarks use: no GIL shared with them).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

__all__ = ["SourceServer", "SourceSettings", "SourceState", "build_app", "main"]

T = TypeVar("T")
Json = dict[str, Any]

TOP_PATHS = 1000
# Distinct paths counted before new ones are lumped together: a scan of unknown ids cannot grow the stats.
MAX_TRACKED_PATHS = 200_000
OTHER_PATHS = "(other)"
GARBAGE_BODY = b"<html><body>502 Bad Gateway: upstream sent garbage</body></html>"
SETTING_NAMES = ("latency", "error_rate", "slow_rate", "slow_latency", "garbage_rate", "status_override", "seed")
RATE_NAMES = ("error_rate", "slow_rate", "garbage_rate")


def _json_response(body: Json, status: int = 200) -> web.Response:
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
        self.in_flight = 0
        self.max_in_flight = 0

    def stats(self) -> Json:
        return {
            "requests": self.requests,
            "by_path": dict(heapq.nlargest(TOP_PATHS, self.by_path.items(), key=lambda kv: kv[1])),
            "by_status": dict(self.by_status),
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
            return _json_response({"error": "status override"}, s.status_override)
        if s.error_rate and rnd() < s.error_rate:
            return _json_response({"error": "injected failure"}, 500)
        item = self.get(item_id)
        if item is None:
            return _json_response({"error": "not found"}, 404)
        if s.garbage_rate and rnd() < s.garbage_rate:
            return web.Response(body=GARBAGE_BODY, content_type="application/json")
        return _json_response({**item, "fetched_at": time.time()})


async def _json_body(request: web.Request) -> Json:
    """The request's JSON object; ValueError (answered 400) when it is something else."""
    try:
        body = await request.json()
    except ValueError:
        raise ValueError("body is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


def build_app(state: SourceState) -> web.Application:
    async def get_control(request: web.Request) -> web.Response:
        return _json_response({**state.settings.as_dict(), "items": state.items})

    async def post_control(request: web.Request) -> web.Response:
        try:
            state.settings.update(await _json_body(request))
        except ValueError as exc:
            return _json_response({"error": str(exc)}, 400)
        return await get_control(request)

    async def bump(request: web.Request) -> web.Response:
        item = state.bump(request.match_info["id"])
        return _json_response(item) if item is not None else _json_response({"error": "not found"}, 404)

    async def bump_many(request: web.Request) -> web.Response:
        ids = (await _json_body(request)).get("ids")
        if not isinstance(ids, list):
            return _json_response({"error": "ids must be a list"}, 400)
        items = [state.bump(str(i)) for i in ids]
        return _json_response({"versions": [item["version"] if item is not None else None for item in items]})

    async def put_item(request: web.Request) -> web.Response:
        try:
            return _json_response(state.put(request.match_info["id"], await _json_body(request)))
        except ValueError as exc:
            return _json_response({"error": str(exc)}, 400)

    async def delete_item(request: web.Request) -> web.Response:
        return _json_response({"deleted": state.delete(request.match_info["id"])})

    async def get_stats(request: web.Request) -> web.Response:
        return _json_response(state.stats())

    async def reset_stats(request: web.Request) -> web.Response:
        state.reset_stats()
        return _json_response(state.stats())

    app = web.Application()
    app.add_routes([
        web.get("/products/{id}", state.read),
        web.get("/items/{id}", state.read),
        web.get("/_control", get_control),
        web.post("/_control", post_control),
        web.post("/_control/bump/{id}", bump),
        web.post("/_control/bump", bump_many),
        web.put("/_control/item/{id}", put_item),
        web.delete("/_control/item/{id}", delete_item),
        web.get("/_stats", get_stats),
        web.post("/_stats/reset", reset_stats),
    ])
    return app


async def _start_site(state: SourceState, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(build_app(state), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    return runner, int(runner.addresses[0][1])


class SourceServer:
    """The source on its own event loop in a daemon thread of this process; port 0 picks a free port."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.05,
                 items: int = 100_000) -> None:
        self.host = host
        self.port = port
        self.state = SourceState(items=items, latency=latency)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Self:
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready: Future[int] = Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._runner, port = loop.run_until_complete(_start_site(self.state, self.host, self.port))
            except BaseException as exc:
                ready.set_exception(exc)
                loop.close()
                return
            ready.set_result(port)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._runner.cleanup())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="cachewarm-source", daemon=True)
        self._thread.start()
        try:
            self.port = ready.result(timeout)
        except BaseException:
            self._thread.join(timeout)
            self._thread = self._loop = None
            raise
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = self._loop = self._runner = None

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the source is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def stats(self) -> Json:
        async def go() -> Json:
            return self.state.stats()
        return self._call(go())

    def reset_stats(self) -> None:
        async def go() -> None:
            self.state.reset_stats()
        self._call(go())

    def configure(self, **settings: Any) -> Json:
        async def go() -> Json:
            self.state.settings.update(settings)
            return self.state.settings.as_dict()
        return self._call(go())

    def bump(self, item_id: int | str) -> Json:
        async def go() -> Json | None:
            return self.state.bump(str(item_id))
        item = self._call(go())
        if item is None:
            raise KeyError(item_id)
        return item

    def set_item(self, item_id: int | str, body: Json) -> Json:
        async def go() -> Json:
            return self.state.put(str(item_id), body)
        return self._call(go())

    def delete_item(self, item_id: int | str) -> bool:
        async def go() -> bool:
            return self.state.delete(str(item_id))
        return self._call(go())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


async def _serve(host: str, port: int, latency: float, items: int) -> None:
    runner, bound = await _start_site(SourceState(items=items, latency=latency), host, port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    print(f"listening on http://{host}:{bound}", flush=True)
    try:
        await stopping.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cachewarm.demo.source",
                                     description="A slow HTTP product API with fault injection.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed when ready)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds each read waits")
    parser.add_argument("--items", type=int, default=100_000, help="ids 0..items-1 exist")
    args = parser.parse_args(argv)
    if args.latency < 0 or args.items < 0:
        parser.error("--latency and --items must be >= 0")
    asyncio.run(_serve(args.host, args.port, args.latency, args.items))


if __name__ == "__main__":
    main()
