"""The refresh path: reload a batch of keys from their sources and write them back, fenced.

For each key, in one script (LEASE below): skip it when it is no longer due (another refresh or a reader got
there first), take its lease ``l:K`` (SET NX; a lease whose worker's heartbeat is gone is taken over), and take
the fence token the write will be checked against. Then, under the keyspace's concurrency limit (a semaphore per
worker process) and rate budget (a token bucket shared by every worker, ratelimit.py), fetch with retries
(exponential backoff, full jitter) for SourceError, and write with store.WRITE, which stores only if no
invalidation of the key or its tags happened since the token was taken. A 404 removes the key (REMOVE, fenced
too, and drops it from the hot and pinned sets). When the source keeps failing the old value stays: it lives
max_stale past its TTL and readers are served it (counted ``stale:S``).

Counters, cluster-wide in ``refresh:stats`` (HINCRBY): ``refreshed:S``, ``not_found:S``, ``fenced:S``,
``failed:S``, ``stale:S``, ``skipped:S``, and
- ``late:S``: the key had already expired (or was missing) when its refresh took the lease;
- ``wasted:S``: nobody read the key since its previous refresh. Detection costs one ZSCORE and one HSET inside
  LEASE: ``seen:S`` remembers the key's ``hot:S`` score at each refresh; reads only ever add to a score (ZINCRBY),
  so an unchanged score means no read was flushed in between. (A rescale of the zset changes every score and
  reads as "read": the counter errs towards not counting.)
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
import redis.asyncio

from . import envelope, ratelimit, store
from .client import _Core, _Plan
from .errors import SourceError
from .hooks import get_hooks
from .keys import KeyLayout
from .keyspaces import KeyspaceRegistry
from .outcomes import RefreshOutcome
from .settings import Settings
from .sources import Fetched

LEASE = store._LUA_COMMON + """
-- KEYS: value, lease, fence, seen, hot, tag gens...   ARGV: token, px, ntags, ahead_ms ('' = due anyway), key,
--       workers prefix
-- Returns {2} not due, {3} someone else holds the lease, {1, fence token, late, wasted, had_value}.
local now = now_ms()
local head = redis.call('GETRANGE', KEYS[1], 0, 12)
local expires = tonumber(head)
if ARGV[4] ~= '' and expires and expires - now >= tonumber(ARGV[4]) then return {2} end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local owner = string.match(redis.call('GET', KEYS[2]) or '', '^w=([^|]+)|')
  if not owner or redis.call('EXISTS', ARGV[6] .. owner) == 1 then return {3} end
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
end
local late = 0
if not expires or expires <= now then late = 1 end
local score = redis.call('ZSCORE', KEYS[5], ARGV[5]) or ''
local prev = redis.call('HGET', KEYS[4], ARGV[5])
local wasted = 0
if prev and prev == score then wasted = 1 end
redis.call('HSET', KEYS[4], ARGV[5], score)
return {1, fence_token(KEYS[3], 6, tonumber(ARGV[3])), late, wasted, expires and 1 or 0}
"""

REMOVE = store._LUA_COMMON + """
-- KEYS: value, fence, lease, wake, waiters, hot, pin, seen, tag gens...   ARGV: fence token, lease token, key, ntags
-- The source said 404: the key is gone (unless an invalidation came first, which already removed it).
local ok = fence_token(KEYS[2], 9, tonumber(ARGV[4])) == ARGV[1]
if ok then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[6], ARGV[3])
  redis.call('SREM', KEYS[7], ARGV[3])
  redis.call('HDEL', KEYS[8], ARGV[3])
end
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
wake_waiters(KEYS[4], KEYS[5], '0')
if ok then return 1 end
return 0
"""
lease_script = store.LuaScript(LEASE)
remove_script = store.LuaScript(REMOVE)

BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0

# Outcomes of one key's refresh (the hooks' `outcome` label; `stat_name` spells them in refresh:stats).
OK, NOT_FOUND, FENCED, SKIPPED, BUSY, FAILED, UNKNOWN = (
    RefreshOutcome.OK, RefreshOutcome.NOT_FOUND, RefreshOutcome.FENCED, RefreshOutcome.SKIPPED, RefreshOutcome.BUSY,
    RefreshOutcome.ERROR, RefreshOutcome.UNKNOWN)


class Pipeliner:
    """Coalesces the script calls made in one turn of the event loop into one pipelined round trip.

    A batch's refreshes take their leases together and finish their fetches in waves, so this turns hundreds of
    EVALSHA round trips (and as many trips through redis-py's connection pool) into a few pipelines.
    """

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self._pending: list[tuple[store.LuaScript, list[Any], list[Any], asyncio.Future[Any]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def call(self, script: store.LuaScript, keys: list[Any], args: list[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((script, keys, args, future))
        if self._flushing is None:
            self._flushing = asyncio.ensure_future(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)          # let the other calls of this turn join
        batch, self._pending = self._pending, []
        self._flushing = None
        try:
            results = await self._execute(batch)
        except BaseException as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _execute(self, batch: list[tuple[store.LuaScript, list[Any], list[Any], asyncio.Future[Any]]]
                       ) -> list[Any]:
        for attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            for script, keys, args, _ in batch:
                script.queue(pipe, keys, args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
            missing = {id(b[0]): b[0] for b, r in zip(batch, results, strict=True)
                       if isinstance(r, redis.exceptions.NoScriptError)}
            if not missing or attempt:
                return results
            for script in missing.values():        # after a Redis restart or SCRIPT FLUSH
                await self.client.script_load(script.source)
        raise AssertionError("unreachable")


@dataclass
class RefreshContext:
    """What refreshes share for the life of a worker process: clients, plans and per-keyspace semaphores."""

    settings: Settings
    redis: redis.asyncio.Redis
    http: httpx.AsyncClient
    worker_id: str
    keyspaces: KeyspaceRegistry | None = None
    core: _Core = field(init=False)
    layout: KeyLayout = field(init=False)
    semaphores: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    pipeliner: Pipeliner = field(init=False)

    def __post_init__(self) -> None:
        self.core = _Core(self.settings, self.keyspaces)
        self.layout = self.core.layout
        self.pipeliner = Pipeliner(self.redis)

    def semaphore(self, keyspace: str) -> asyncio.Semaphore:
        sem = self.semaphores.get(keyspace)
        if sem is None:
            cfg = self.core.keyspaces[keyspace].config
            sem = self.semaphores[keyspace] = asyncio.Semaphore(cfg.concurrency or self.settings.refresh_concurrency)
        return sem


@dataclass
class KeyResult:
    key: str
    keyspace: str
    outcome: RefreshOutcome
    late: bool = False
    wasted: bool = False
    stale: bool = False


async def refresh_batch(ctx: RefreshContext, keys: Sequence[str], *, force: bool = False) -> Counter[str]:
    """Refreshes keys concurrently; returns how many ended in each outcome. `force` ignores "not due"
    (`cachewarm warm`). Claims of the keys are released at the end whatever happened."""
    results = await asyncio.gather(*(refresh_one(ctx, key, force=force) for key in keys))
    counts: Counter[str] = Counter()
    stats: Counter[str] = Counter()
    for res in results:
        counts[res.outcome] += 1
        stats[f"{res.outcome.stat_name}:{res.keyspace}"] += 1
        for flag in ("late", "wasted", "stale"):
            if getattr(res, flag):
                stats[f"{flag}:{res.keyspace}"] += 1
    pipe = ctx.redis.pipeline(transaction=False)
    for name, delta in stats.items():
        pipe.hincrby(ctx.layout.refresh_stats, name, delta)
    if keys:
        pipe.delete(*(ctx.layout.claim(k) for k in keys))
    try:
        await pipe.execute()
    except redis.RedisError:
        get_hooks().redis_error("refresh_stats")
    return counts


async def refresh_one(ctx: RefreshContext, key: str, *, force: bool = False) -> KeyResult:
    plan = ctx.core.plan(key)
    if plan is None or plan.source is None:
        return KeyResult(key, "_none", UNKNOWN)
    cfg = ctx.core.keyspaces[plan.label].config
    layout = ctx.layout
    result = KeyResult(key, plan.label, SKIPPED)
    try:
        async with ctx.semaphore(plan.label):
            token = f"w={ctx.worker_id}|{secrets.token_hex(6)}"
            leased = await ctx.pipeliner.call(
                lease_script,
                [layout.value(key), layout.lease(key), layout.fence(key), layout.seen(plan.label),
                 layout.hot(plan.label), *(layout.tag_gen(t) for t in plan.tags)],
                [token, ctx.settings.lease_ms, len(plan.tags), "" if force else int(cfg.refresh_ahead * 1000), key,
                 layout.worker("")])
            if int(leased[0]) != 1:
                result.outcome = SKIPPED if int(leased[0]) == 2 else BUSY
                return result
            fence = leased[1].decode()
            result.late, result.wasted = bool(int(leased[2])), bool(int(leased[3]))
            had_value = bool(int(leased[4]))
            try:
                fetched = await _fetch(ctx, plan, cfg.rate if cfg.rate is not None else ctx.settings.refresh_rate)
            except SourceError:
                await _release(ctx, key, token)
                result.outcome = FAILED
                result.stale = had_value
                return result
            except BaseException:
                await _release(ctx, key, token)
                raise
            if not fetched.found:
                removed = await ctx.pipeliner.call(
                    remove_script,
                    [layout.value(key), layout.fence(key), layout.lease(key), layout.wake(key), layout.waiters(key),
                     layout.hot(plan.label), layout.pinned(plan.label), layout.seen(plan.label),
                     *(layout.tag_gen(t) for t in plan.tags)],
                    [fence, token, key, len(plan.tags)])
                result.outcome = NOT_FOUND if removed else FENCED
                return result
            keys, args = ctx.core.write_args(plan, envelope.dumps(fetched.value), fence=fence,
                                             lease_token=token, version=fetched.version)
            written = await ctx.pipeliner.call(store.write_script, keys, args)
            result.outcome = OK if written else FENCED
            return result
    except redis.RedisError:
        get_hooks().redis_error("refresh")
        result.outcome = FAILED
        return result
    finally:
        get_hooks().refresh(result.keyspace, result.outcome)


async def _release(ctx: RefreshContext, key: str, token: str) -> None:
    layout = ctx.layout
    await ctx.pipeliner.call(store.release_script, [layout.lease(key), layout.wake(key), layout.waiters(key)],
                             [token])


async def _fetch(ctx: RefreshContext, plan: _Plan, rate: float) -> Fetched:
    """One source fetch with the shared rate budget and retries (exponential backoff, full jitter)."""
    assert plan.source is not None
    hooks = get_hooks()
    attempts = ctx.settings.refresh_retries + 1
    for attempt in range(attempts):
        await ratelimit.acquire(ctx.redis, ctx.layout.rate(plan.label), rate)
        started = time.perf_counter()
        try:
            fetched = await plan.source.fetch(plan.params, ctx.http)
        except SourceError as exc:
            hooks.source_request(plan.label, time.perf_counter() - started, exc.kind)
            if attempt + 1 >= attempts:
                raise
            await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt)))
            continue
        hooks.source_request(plan.label, time.perf_counter() - started, "ok" if fetched.found else "not_found")
        return fetched
    raise AssertionError("unreachable")


def stats(client: redis.Redis, layout: KeyLayout) -> dict[str, Any]:
    """The refresh:stats hash, decoded (numbers as int or float)."""
    out: dict[str, Any] = {}
    raw: dict[bytes, bytes] = client.hgetall(layout.refresh_stats)  # type: ignore[assignment]
    for name, value in raw.items():
        text = value.decode()
        out[name.decode()] = float(text) if "." in text else int(text)
    return out
