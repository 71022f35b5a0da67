"""The refresh path's round trips: script calls made in one turn of the event loop, sent as one pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import redis.asyncio

from ..redis_layer import node_calls, scripts

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
    own call (its own slot) unless the items are grouped per node (node_calls.py: one call of the keys of many
    slots per node, issue 29). `call` and `merged` return futures: awaiting them adds no task. With a `window`
    (seconds), a flush waits that long for more calls: fetches finish spread out, and one pipeline per loop turn
    was about one pipeline per two keys.
    """

    def __init__(self, client: redis.asyncio.Redis, window: float = 0.0) -> None:
        self.client = client
        self.window = window
        self.merge = not scripts.is_cluster(client)
        self.per_node = not self.merge and node_calls.enabled()
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
        grouped: dict[int, tuple[Build, list[Any]]] = {}  # per-node calls (a cluster): index -> their items
        if self.per_node and merged:
            await self.client.initialize()  # type: ignore[attr-defined]  # its slot map (at once when known)
        for build, entries in merged.values():
            for chunk in self._chunks(build, entries):
                items = [item for item, _ in chunk]
                call = build(items)
                if self.per_node and len(chunk) > 1:
                    call = node_calls.on_node(call, len(call.keys) // len(chunk))
                    grouped[len(calls)] = (build, items)
                calls.append(call)
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
        if grouped:
            await self._not_here_again(grouped, results)
        for target, result in zip(targets, results, strict=True):
            if isinstance(target, list):
                for i, future in enumerate(target):
                    if not future.done():
                        if isinstance(result, Exception):
                            future.set_exception(result)
                        elif isinstance(result[i], Exception):  # a per-node call's item sent again alone
                            future.set_exception(result[i])
                        else:
                            future.set_result(result[i])
            elif not target.done():
                if isinstance(result, Exception):
                    target.set_exception(result)
                else:
                    target.set_result(result)

    def _chunks(self, build: Build, entries: list[tuple[Any, asyncio.Future[Any]]]
                ) -> list[list[tuple[Any, asyncio.Future[Any]]]]:
        """The merged items' calls: MERGE_MAX items each on one Redis; on a cluster an item each, or (per node)
        the items of one node (MERGE_MAX at most), keys whose structures share no slot an item each."""
        if self.merge:
            return [entries[i:i + MERGE_MAX] for i in range(0, len(entries), MERGE_MAX)]
        if not self.per_node:
            return [[entry] for entry in entries]
        routes: list[str | bytes] = []
        alone: list[list[tuple[Any, asyncio.Future[Any]]]] = []
        kept: list[tuple[Any, asyncio.Future[Any]]] = []
        for entry in entries:
            keys = build([entry[0]]).keys
            if keys and node_calls.groupable(keys[0]):
                kept.append(entry)
                routes.append(keys[0])
            else:
                alone.append([entry])
        out = alone
        for node, indexes in node_calls.by_node(self.client, routes).items():
            group = [kept[i] for i in indexes]
            if node is None:
                out += [[entry] for entry in group]
            else:
                out += [group[i:i + MERGE_MAX] for i in range(0, len(group), MERGE_MAX)]
        return out

    async def _not_here_again(self, grouped: dict[int, tuple[Build, list[Any]]], results: list[Any]) -> None:
        """A node's call that found a key not on its node (a slot moved: nothing ran) is sent again as one call
        per item (redis-py routes each afresh); its reply becomes the list of theirs (errors in place)."""
        again = [i for i in grouped if node_calls.not_here(results[i])]
        if not again:
            return
        singles = [build([item]) for i in again for build, items in [grouped[i]] for item in items]
        retried = iter(await scripts.aexecute(self.client, singles))
        for i in again:
            results[i] = [r if isinstance(r := next(retried), Exception) else r[0] for _ in grouped[i][1]]
