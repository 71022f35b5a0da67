"""A TCP proxy that injects network faults between two components (app and Redis, worker and source...).

    with RedisServer() as srv, FaultProxy("127.0.0.1", srv.port) as proxy:
        client = redis.Redis(host=proxy.host, port=proxy.port)
        proxy.set_mode("delay", delay=0.5)   # every chunk waits 0.5 s, in each direction
        proxy.set_mode("drop")               # connections are closed (FIN), new ones closed on accept
        proxy.set_mode("reset")              # connections are reset (RST), new ones reset on accept
        proxy.set_mode("blackhole")          # bytes are read and thrown away, nothing ever answers
        proxy.set_mode("pass")               # new connections work again

It runs on its own event loop in a daemon thread; `set_mode` returns once the mode applies to every
connection, so a test can act right after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

__all__ = ["FaultProxy", "Mode"]

Mode = Literal["pass", "delay", "drop", "reset", "blackhole"]
MODES: tuple[Mode, ...] = ("pass", "delay", "drop", "reset", "blackhole")
CHUNK = 65536
T = TypeVar("T")


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0, so the peer gets an RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    """One client connection and, unless black-holed from the start, its upstream connection."""

    def __init__(self, proxy: FaultProxy, client: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.proxy = proxy
        self.client_reader, self.client_writer = client
        self.upstream_writer: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client_writer, self.upstream_writer) if w is not None]

    def close(self) -> None:
        for writer in self.writers():
            writer.close()
        self._cancel()

    def reset(self) -> None:
        for writer in self.writers():
            _reset(writer)
        self._cancel()

    def _cancel(self) -> None:
        self.proxy._connections.discard(self)
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()

    async def run(self) -> None:
        try:
            if self.proxy.mode == "blackhole":
                await self._discard(self.client_reader)
                return
            try:
                upstream_reader, self.upstream_writer = await asyncio.open_connection(
                    self.proxy.target_host, self.proxy.target_port)
            except OSError:
                _reset(self.client_writer)
                return
            self.tasks += [asyncio.create_task(self._pipe(self.client_reader, self.upstream_writer)),
                           asyncio.create_task(self._pipe(upstream_reader, self.client_writer))]
            await asyncio.gather(*self.tasks, return_exceptions=True)
        except OSError:
            pass
        finally:
            self.close()

    async def _discard(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(CHUNK):
            pass

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copies one direction; each chunk is due `delay` after it was read, so delays add latency only.

        An end of stream is passed on (half-close); an error on either side closes the whole connection.
        """
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                if self.proxy.mode != "blackhole":
                    writer.write(data)
                    await writer.drain()

        sender = asyncio.create_task(send())
        self.tasks.append(sender)
        try:
            while True:
                data = await reader.read(CHUNK)
                mode = self.proxy.mode
                if data and mode == "blackhole":
                    continue
                delay = self.proxy.delay if mode == "delay" else 0.0
                queue.put_nowait((time.monotonic() + delay, data))
                if not data:
                    break
            await sender
        except OSError:
            self.close()
        finally:
            sender.cancel()


class FaultProxy:
    """Listens on 127.0.0.1 (a free port unless given) and forwards to target_host:target_port."""

    def __init__(self, target_host: str, target_port: int, *, port: int = 0, mode: Mode = "pass",
                 delay: float = 0.0, start: bool = True) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = "127.0.0.1"
        self.port = port
        self.mode: Mode = mode
        self.delay = delay
        self.accepted = 0
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        if start:
            self.start()

    @property
    def active_connections(self) -> int:
        return len(self._connections)

    def start(self, timeout: float = 10.0) -> Self:
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready: Future[int] = Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._accept, self.host, self.port, backlog=512))
            except BaseException as exc:
                ready.set_exception(exc)
                loop.close()
                return
            ready.set_result(int(self._server.sockets[0].getsockname()[1]))
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        try:
            self.port = ready.result(timeout)
        except BaseException:
            self._thread.join(timeout)
            self._thread = self._loop = None
            raise
        return self

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        self._close_all()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = self._loop = None

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the proxy is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def set_mode(self, mode: Mode, *, delay: float | None = None) -> None:
        """Switches every connection, existing and new, to `mode`; `delay` is in seconds per chunk."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")

        async def apply() -> None:
            self.mode = mode
            if delay is not None:
                self.delay = delay
            if mode == "drop":
                self._close_all()
            elif mode == "reset":
                for conn in list(self._connections):
                    conn.reset()
        self._call(apply())

    def close_all(self) -> None:
        """Closes every open connection (a FIN to both sides); new connections follow the mode."""
        async def apply() -> None:
            self._close_all()
        self._call(apply())

    def _close_all(self) -> None:
        for conn in list(self._connections):
            conn.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "drop":
            writer.close()
            return
        if self.mode == "reset":
            _reset(writer)
            return
        conn = _Connection(self, (reader, writer))
        handler = asyncio.current_task()
        assert handler is not None
        self._connections.add(conn)
        self._handlers.add(handler)
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)
            self._handlers.discard(handler)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
