"""The refresh path's round trips: script calls made in one turn of the event loop, sent as one pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import redis.asyncio

from ..redis_layer import scripts

R = TypeVar("R")

Build = Callable[[list[Any]], "scripts.Call[list[Any]]"]
MERGE_MAX = 500  # items of one merged script call at most
# How long the refresh path's script calls wait for company before their pipeline goes: 2 ms (5 ms measured the
# same) against 50 ms fetches took CPU per key from 1.10-1.20 to 0.93-1.11 ms in one process (issue 12).
FLUSH_WINDOW = 0.002


class Pipeliner:
    """Coalesces the script calls made in one turn of the event loop into one pipelined round trip.

    A batch's refreshes take their leases together and finish their fetches in waves, so this turns hundreds of
    EVALSHA round trips (and as many trips through redis-py's connection pool) into a few pipelines. Calls of
    the same kind (`merged`: LEASE, WRITE) are merged on one Redis into one script call of many keys, which
    packs a few arguments per key instead of a whole command (issue 12); on a Redis Cluster each key keeps its
    own call (its own slot). `call` and `merged` return futures: awaiting them adds no task. With a `window`
    (seconds), a flush waits that long for more calls: fetches finish spread out, and one pipeline per loop turn
    was about one pipeline per two keys.
    """

    def __init__(self, client: redis.asyncio.Redis, window: float = 0.0) -> None:
        self.client = client
        self.window = window
        self.merge = not scripts.is_cluster(client)
        self._pending: list[tuple[scripts.Call[Any], asyncio.Future[Any]]] = []
        self._merged: dict[Hashable, tuple[Build, list[tuple[Any, asyncio.Future[Any]]]]] = {}
        self._flushing: asyncio.Task[None] | None = None

    def call(self, call: scripts.Call[R]) -> asyncio.Future[R]:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((call, future))
        self._schedule()
        return future

    def merged(self, kind: Hashable, build: Build, item: Any) -> asyncio.Future[Any]:
        """`build([item, ...])` makes one call of many items whose reply is a list, one result per item, in
        order; items of the same `kind` (which must say everything `build` puts in the call besides the items)
        made in this turn go in one call."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        group = self._merged.get(kind)
        if group is None:
            group = self._merged[kind] = (build, [])
        group[1].append((item, future))
        self._schedule()
        return future

    def _schedule(self) -> None:
        if self._flushing is None:
            self._flushing = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(self.window)  # let the other calls of this turn (and of the window) join
        batch, self._pending = self._pending, []
        merged, self._merged = self._merged, {}
        self._flushing = None
        calls = [call for call, _ in batch]
        targets: list[asyncio.Future[Any] | list[asyncio.Future[Any]]] = [future for _, future in batch]
        step = MERGE_MAX if self.merge else 1
        for build, entries in merged.values():
            for i in range(0, len(entries), step):
                chunk = entries[i:i + step]
                calls.append(build([item for item, _ in chunk]))
                targets.append([future for _, future in chunk])
        try:
            results = await scripts.aexecute(self.client, calls)
        except BaseException as exc:
            for target in targets:
                for future in target if isinstance(target, list) else [target]:
                    if not future.done():
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for target, result in zip(targets, results, strict=True):
            if isinstance(target, list):
                for i, future in enumerate(target):
                    if not future.done():
                        if isinstance(result, Exception):
                            future.set_exception(result)
                        else:
                            future.set_result(result[i])
            elif not target.done():
                if isinstance(result, Exception):
                    target.set_exception(result)
                else:
                    target.set_result(result)
