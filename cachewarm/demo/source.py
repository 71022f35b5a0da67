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
    GET  /_stats                {"requests", "by_path" (top 1000; not the auditor's checks), "by_status",
                                "by_agent" (User-Agent's product, top 1000), "in_flight", "max_in_flight"}
    POST /_stats/reset

Only reads are counted in the stats: they are the load the cache puts on the source.

Run it with `python -m cachewarm.demo.source --port 8000 --latency 0.05`, in-process with `SourceServer`, or
in a child process with `source_process.SourceProcess` (what the benchmarks use: no GIL shared with them). The
items, the fault settings and the counts are source_state.py's; this module serves them.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

from .source_state import Json, SourceSettings, SourceState, json_response

__all__ = ["SourceServer", "SourceSettings", "SourceState", "build_app", "main"]

T = TypeVar("T")

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
        return json_response({**state.settings.as_dict(), "items": state.items})

    async def post_control(request: web.Request) -> web.Response:
        try:
            state.settings.update(await _json_body(request))
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        return await get_control(request)

    async def bump(request: web.Request) -> web.Response:
        item = state.bump(request.match_info["id"])
        return json_response(item) if item is not None else json_response({"error": "not found"}, 404)

    async def bump_many(request: web.Request) -> web.Response:
        ids = (await _json_body(request)).get("ids")
        if not isinstance(ids, list):
            return json_response({"error": "ids must be a list"}, 400)
        items = [state.bump(str(i)) for i in ids]
        return json_response({"versions": [item["version"] if item is not None else None for item in items]})

    async def put_item(request: web.Request) -> web.Response:
        try:
            return json_response(state.put(request.match_info["id"], await _json_body(request)))
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)

    async def delete_item(request: web.Request) -> web.Response:
        return json_response({"deleted": state.delete(request.match_info["id"])})

    async def get_stats(request: web.Request) -> web.Response:
        return json_response(state.stats())

    async def reset_stats(request: web.Request) -> web.Response:
        state.reset_stats()
        return json_response(state.stats())

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
