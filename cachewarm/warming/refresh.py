"""The refresh path: reload a batch of keys from their sources and write them back, fenced.

For each key, in one script (lua/lease.lua): skip it when it is no longer due (another refresh or a reader got
there first), take its lease ``l:K`` (SET NX; a lease whose worker's heartbeat is gone is taken over), and take
the fence token the write will be checked against. Then, under the keyspace's rate budget (a token bucket shared by
every worker, ratelimit.py) and its concurrency limit (a semaphore per worker process around each source request
only: held across the lease and write round trips too, it capped hot refreshes near 430/s at 500 invalidations/s
and queued them 200 ms, issue 12), fetch with retries
(exponential backoff, full jitter) for SourceError, and write with lua/write.lua, which stores only if no
invalidation of the key or its tags happened since the token was taken. A 404 removes the key (lua/remove.lua, fenced
too, and drops it from the hot and pinned sets). When the source keeps failing the old value stays: it lives
max_stale past its TTL and readers are served it (counted ``stale:S``).

Counters, cluster-wide in ``refresh:stats`` (HINCRBY): ``refreshed:S``, ``not_found:S``, ``fenced:S``,
``failed:S``, ``stale:S``, ``skipped:S``, ``fetch_us:S`` / ``fetches:S`` (the answered source requests' time and
count: the miss cost of refresh by value, value.py), and
- ``late:S``: a refresh by the scan found the key already expired, or missing after an earlier load or
  invalidation (its fence exists); a key's first load and forced refreshes (`cachewarm warm`, an invalidated hot
  key: missing on purpose) are never late (lua/lease.lua);
- ``wasted:S``: nobody read the key since its previous refresh. Detection is lua/seen.lua, sent with the key's
  write (or release) in the same pipeline, in the key's hot-set shard: ``seen:{S#n}`` remembers the key's hot
  score at each refresh; reads only ever add to a score (ZINCRBY), so an unchanged score means no read was flushed
  in between. (A rescale of the zset changes every score and reads as "read": the counter errs towards not
  counting.)

Round trips per batch (each a pipeline of the batch's calls, split by node on a Redis Cluster): LEASE; the
writes (with SEEN and, for tagged keys, ENLIST); for a tagged keyspace one more before LEASE (ENLIST: keys.py);
a 404 adds FORGET and the unpin. On one Redis the LEASEs of a pipeline are one script call of many keys, and so
are its WRITEs and its SEENs (pipeline.Pipeliner.merged); on a Redis Cluster the keys of one node share a call
(redis_layer/node_calls.py; before issue 29 each key had a call of its own).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import secrets
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import redis
import redis.asyncio

from ..config.sources import Fetched
from ..errors import SourceError, ValueNotSerializable
from ..hooks import get_hooks
from ..outcomes import RefreshOutcome, SourceOutcome
from ..read.plans import Plan
from ..redis_layer import envelope, script_calls, scripts
from ..redis_layer.connections import REDIS_ERRORS
from ..redis_layer.keys import KeyLayout
from ..redis_layer.script_calls import LeaseStatus, RemoveStatus, WriteStatus
from . import claims, ratelimit
from .context import RefreshContext

R = TypeVar("R")
log = logging.getLogger(__name__)

BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0
# A forced refresh that finds the lease held waits for its holder: first after 20 ms (about a fast load), doubling
# to 250 ms, for at most 5 s in all (a holder that died lets its lease lapse within its lease time).
BUSY_RETRY_FIRST = 0.02
BUSY_RETRY_CAP = 0.25
BUSY_RETRY_FOR = 5.0

class KeyWatch(Protocol):
    """Told of each key of a batch, on the refresh loop (refresh_batch's `watch`)."""

    def fetching(self, key: str) -> None:
        """The key's source request is about to go (a value fetched from now on has every change committed before
        this call)."""

    def done(self, key: str, written: bool) -> None:
        """The key's refresh ended; `written`: it stored a value."""


_WATCH: contextvars.ContextVar[KeyWatch | None] = contextvars.ContextVar("cachewarm_refresh_watch", default=None)


@dataclass
class KeyResult:
    key: str
    keyspace: str
    outcome: RefreshOutcome
    late: bool = False
    wasted: bool = False
    stale: bool = False
    reason: str = ""  # why an ERROR: the source's or Redis's words
    fetch_seconds: float = 0.0  # the answered source request's time (the miss cost value.py prices refreshes by)


async def refresh_batch(ctx: RefreshContext, keys: Sequence[str], *, force: bool = False,
                        watch: KeyWatch | None = None,
                        outcomes: dict[str, RefreshOutcome] | None = None,
                        reasons: dict[str, str] | None = None) -> Counter[str]:
    """Refreshes keys concurrently; returns how many ended in each outcome (and fills `outcomes`, when given, with
    each key's, and `reasons` with why each ERROR failed). `force` ignores "not due" (`cachewarm warm`); `watch` is
    told as each key's source request goes and as its refresh ends (an invalidated hot key's next refresh:
    invalidation/hot_refresh.py). Claims of the keys are released at the end whatever happened."""
    results: list[KeyResult] = []
    try:
        if force:  # a task per key: a key whose lease is held waits for its holder without holding back the others
            results = await asyncio.gather(*(_reported(ctx, key, force, watch) for key in keys))
        else:
            await _in_turn(ctx, keys, results, watch)
    finally:
        tell_hooks(ctx)
    counts: Counter[str] = Counter()
    stats: Counter[str] = Counter()
    for res in results:
        counts[res.outcome] += 1
        if outcomes is not None:
            outcomes[res.key] = res.outcome
        if reasons is not None and res.reason:
            reasons[res.key] = res.reason
        stats[f"{res.outcome.stat_name}:{res.keyspace}"] += 1
        for flag in ("late", "wasted", "stale"):
            if getattr(res, flag):
                stats[f"{flag}:{res.keyspace}"] += 1
        if res.fetch_seconds > 0:  # the keyspace's measured source latency (value.measured_miss_cost)
            stats[f"fetch_us:{res.keyspace}"] += round(res.fetch_seconds * 1e6)
            stats[f"fetches:{res.keyspace}"] += 1
    pipe = ctx.redis.pipeline(transaction=False)
    for name, delta in stats.items():
        pipe.hincrby(ctx.layout.refresh_stats, name, delta)
    per_node = claims.per_node_release(ctx.redis, len(keys))
    names = [ctx.layout.claim(key) for key in keys] if not per_node else []
    if ctx.pipeliner.merge:
        pipe.delete(*names)
    else:
        for claim in names:  # one DEL per claim: on a Redis Cluster they are in as many slots (or per node, below)
            pipe.delete(claim)
    try:
        if per_node:
            await asyncio.gather(pipe.execute(), claims.release(ctx.redis, ctx.layout, list(keys)))
        else:
            await pipe.execute()
    except REDIS_ERRORS:
        get_hooks().redis_error("refresh_stats")
    return counts


async def _in_turn(ctx: RefreshContext, keys: Sequence[str], results: list[KeyResult],
                   watch: KeyWatch | None) -> None:
    """Refreshes each keyspace's keys on as many coroutines as its concurrency, each taking the next key when its
    last one ends, appending to `results`. A task per key made most of a batch's tasks wait on the keyspace's
    semaphore (two batches of 500 in flight in a process, 50 fetches at a time: 950 waiting), about 25 us of
    event-loop CPU per key (issue 12); the semaphore still bounds every batch of the process together."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        plan = ctx.core.plan(key)
        groups.setdefault(plan.label if plan is not None and plan.source is not None else "", []).append(key)

    async def work(todo: Iterator[str]) -> None:
        for key in todo:
            results.append(await _reported(ctx, key, False, watch))

    runners = []
    for label, group in groups.items():
        todo = iter(group)
        runners += [work(todo) for _ in range(min(len(group), ctx.concurrency(label) if label else 1))]
    await asyncio.gather(*runners)


async def _reported(ctx: RefreshContext, key: str, force: bool, watch: KeyWatch | None) -> KeyResult:
    if watch is None:
        return await refresh_one(ctx, key, force=force)
    written = False
    token = _WATCH.set(watch)
    try:
        result = await refresh_one(ctx, key, force=force)
        written = result.outcome is RefreshOutcome.OK
        return result
    finally:
        _WATCH.reset(token)
        watch.done(key, written)


def tell_hooks(ctx: RefreshContext) -> None:
    """Hands the hooks the outcomes counted so far in `ctx` (every key counted once, by whichever batch of the
    process ends first after it)."""
    tally, ctx.tally = ctx.tally, Counter()
    hooks = get_hooks()
    for (keyspace, outcome), count in tally.items():
        hooks.refresh(keyspace, outcome, count)


async def refresh_one(ctx: RefreshContext, key: str, *, force: bool = False) -> KeyResult:
    """Refreshes one key. A forced refresh (an invalidated hot key, `cachewarm warm`) that finds the key's lease held
    waits for the holder and tries again, now only if the key is still due: the holder (a reader's load, or a refresh
    that took its fence token before the invalidation) may have its write refused by the fence, and the key would
    then stay missing until its next read. The holder's own fresh value makes the retry a "not due" skip."""
    plan = ctx.core.plan(key)
    if plan is None or plan.source is None:
        return KeyResult(key, "_none", RefreshOutcome.UNKNOWN)
    cfg = ctx.core.keyspaces[plan.label].config
    ahead_ms = int(cfg.refresh_ahead * 1000)
    result = KeyResult(key, plan.label, RefreshOutcome.SKIPPED)
    try:
        result = await _refresh_attempt(ctx, plan, None if force else ahead_ms)
        waited, delay = 0.0, BUSY_RETRY_FIRST
        while force and result.outcome is RefreshOutcome.BUSY and waited < BUSY_RETRY_FOR:
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, BUSY_RETRY_CAP)
            result = await _refresh_attempt(ctx, plan, ahead_ms)
        if force:  # missing on purpose (a first warm, an invalidated hot key): never late, even after a retry
            result.late = False
        return result
    finally:
        ctx.tally[result.keyspace, result.outcome] += 1  # told to the hooks by refresh_batch (tell_hooks)


async def _refresh_attempt(ctx: RefreshContext, plan: Plan, ahead_ms: int | None) -> KeyResult:
    """One try: lease (skipped when not due by `ahead_ms`; None: due anyway), fetch, write."""
    key = plan.key
    cfg = ctx.core.keyspaces[plan.label].config
    layout = ctx.layout
    result = KeyResult(key, plan.label, RefreshOutcome.SKIPPED)
    try:
        token = f"w={ctx.worker_id}|{secrets.token_hex(6)}"
        enlist = ctx.core.enlist_calls(plan)
        if enlist:  # a tagged key: enlisted before its fence token is read (keys.py)
            await asyncio.gather(*(ctx.pipeliner.call(call) for call in enlist))
        leased = await _lease(ctx, plan, token, ahead_ms)
        if leased.status is not LeaseStatus.TAKEN:
            result.outcome = RefreshOutcome.SKIPPED if leased.status is LeaseStatus.NOT_DUE else RefreshOutcome.BUSY
            return result
        fence, had_value = leased.fence, leased.had_value
        result.late = leased.late
        seen = (key, plan.label)  # the key's SEEN, sent along with its write or release (merged: build_seen)
        try:
            fetched = await _fetch(ctx, plan, cfg.rate if cfg.rate is not None else ctx.settings.refresh_rate, result)
            payload: str | bytes | None = None
            if fetched.found:  # a source's JSON body stored as it came (one parse, no dump), else encoded
                payload = fetched.raw if fetched.raw is not None else envelope.dumps(fetched.value)
        except (SourceError, ValueNotSerializable) as exc:  # a value JSON cannot hold fails this key only
            if isinstance(exc, ValueNotSerializable):
                log.warning("refresh of %r: the source gave %s; the old value stays", key[:200], exc)
            result.wasted = (await _release(ctx, key, token, seen))[1]
            result.outcome = RefreshOutcome.ERROR
            result.reason = str(exc)
            result.stale = had_value
            return result
        except BaseException:
            await _release(ctx, key, token, seen)
            raise
        if not fetched.found:
            removed, result.wasted = await _along(ctx, script_calls.remove(
                layout, key=key, fence=fence, lease_token=token), seen)
            result.outcome = RefreshOutcome.NOT_FOUND if removed is RemoveStatus.REMOVED else RefreshOutcome.FENCED
            if removed is RemoveStatus.REMOVED:
                await _forget(ctx, plan)
            return result
        ttl = plan.ttl_ms
        item = script_calls.WriteItem(key, envelope.encode(payload, fetched_ms=_now_ms(),
                                                           ttl_ms=ttl, version=fetched.version),
                                      ttl + plan.stale_ms, fence, token, fetched.version)
        write = ctx.pipeliner.merged("write", ctx.build_write, item)
        written, result.wasted = await _along(ctx, write, seen, *enlist)
        result.outcome = RefreshOutcome.OK if written is WriteStatus.WRITTEN else RefreshOutcome.FENCED
        return result
    except REDIS_ERRORS as exc:
        get_hooks().redis_error("refresh")
        result.outcome = RefreshOutcome.ERROR
        result.reason = f"redis: {type(exc).__name__}"
        return result


async def _lease(ctx: RefreshContext, plan: Plan, token: str, ahead_ms: int | None) -> script_calls.Leased:
    """LEASE (merged with the other keys' of this turn); a lease held by a worker is asked about once more with
    that worker's heartbeat key in KEYS (taken over when the heartbeat is gone): a second round trip, only for
    keys another worker holds."""
    lease_ms, keep_ms = ctx.settings.lease_ms, ctx.core.fence_keep_ms(plan)
    kind = ("lease", ahead_ms, keep_ms)
    build = ctx.lease_builds.get(kind)
    if build is None:
        def build(items: list[tuple[str, str]]) -> scripts.Call[list[script_calls.Leased]]:
            return script_calls.lease_many(ctx.layout, items, lease_ms=lease_ms, ahead_ms=ahead_ms,
                                           fence_keep_ms=keep_ms)
        ctx.lease_builds[kind] = build
    leased: script_calls.Leased = await ctx.pipeliner.merged(kind, build, (plan.key, token))
    # The heartbeat lives in its own slot: asked first, then the lease taken over if it is gone.
    if (leased.status is LeaseStatus.HELD and leased.owner is not None
            and not await ctx.redis.exists(ctx.layout.worker(leased.owner))):
        leased = await ctx.pipeliner.call(script_calls.lease(
            ctx.layout, key=plan.key, token=token, lease_ms=lease_ms, ahead_ms=ahead_ms, suspect=leased.owner,
            fence_keep_ms=keep_ms))
    return leased


async def _along(ctx: RefreshContext, call: scripts.Call[R] | asyncio.Future[R], seen: tuple[str, str],
                 *more: scripts.Call[Any]) -> tuple[R, bool]:
    """`call` (or its future, already queued) with the SEEN of `seen` (key, keyspace; merged with the other keys'
    of this turn) and `more` in the same pipeline turn: its reply and whether it was wasted."""
    first = call if isinstance(call, asyncio.Future) else ctx.pipeliner.call(call)
    reply, wasted, *rest = await asyncio.gather(first, ctx.pipeliner.merged("seen", ctx.build_seen, seen),
                                                *(ctx.pipeliner.call(m) for m in more), return_exceptions=True)
    for failed in (reply, *rest):
        if isinstance(failed, BaseException):
            raise failed
    return cast(R, reply), wasted is True  # a failed SEEN only loses the wasted count


async def _release(ctx: RefreshContext, key: str, token: str, seen: tuple[str, str]) -> tuple[None, bool]:
    return await _along(ctx, script_calls.release(ctx.layout, key=key, lease_token=token), seen)


async def _forget(ctx: RefreshContext, plan: Plan) -> None:
    """A key the source no longer has leaves its hot-set shard and its keyspace's pins."""
    await asyncio.gather(ctx.pipeliner.call(script_calls.forget(ctx.layout, key=plan.key, keyspace=plan.label)),
                         ctx.redis.srem(ctx.layout.pinned(plan.label), plan.key))


async def _fetch(ctx: RefreshContext, plan: Plan, rate: float, result: KeyResult) -> Fetched:
    """One source fetch with the shared rate budget and retries (exponential backoff, full jitter); the answered
    request's time goes into `result.fetch_seconds`."""
    assert plan.source is not None
    hooks = get_hooks()
    attempts = ctx.settings.refresh_retries + 1
    watch = _WATCH.get()
    for attempt in range(attempts):
        await ratelimit.acquire(ctx.redis, ctx.layout.rate(plan.label), rate)
        try:
            async with ctx.semaphore(plan.label):  # the keyspace's source requests in flight in this process
                if watch is not None:
                    watch.fetching(plan.key)
                started = time.perf_counter()  # the request's time, not the wait for the semaphore
                fetched = await plan.source.fetch(plan.params, ctx.http)
        except SourceError as exc:
            hooks.source_request(plan.label, time.perf_counter() - started, exc.kind)
            if attempt + 1 >= attempts:
                raise
            await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt)))
            continue
        result.fetch_seconds = time.perf_counter() - started
        hooks.source_request(plan.label, result.fetch_seconds,
                             SourceOutcome.OK if fetched.found else SourceOutcome.NOT_FOUND)
        return fetched
    raise AssertionError("unreachable")


def _now_ms() -> int:
    return int(time.time() * 1000)


def stats(client: redis.Redis, layout: KeyLayout) -> dict[str, Any]:
    """The refresh:stats hash, decoded (numbers as int or float)."""
    out: dict[str, Any] = {}
    raw: dict[bytes, bytes] = client.hgetall(layout.refresh_stats)  # type: ignore[assignment]
    for name, value in raw.items():
        text = value.decode()
        out[name.decode()] = float(text) if "." in text else int(text)
    return out
