"""The invalidation consumer: one per worker node (in a process of its own, worker/invalidation_process.py), all in
one consumer group, at-least-once.

Each round: claim entries another consumer left pending longer than ``claim_idle_ms`` (XAUTOCLAIM; a killed worker
never acknowledged them), read new entries, then for each entry:

- cannot be parsed, or delivered more than ``max_deliveries`` times: copied to ``cachewarm:invalidations:dead``
  with a ``reason`` and acknowledged (dead_letters.py);
- otherwise applied (apply.py) and only then acknowledged. An entry whose application fails stays pending and is
  retried; applying an event twice is harmless (a second INVALIDATE_KEY only bumps the generation again). The
  consumer retries what it failed to apply from memory (held, with a back-off from 0.1 s doubling to 5 s, up to
  HELD_ATTEMPTS times; then it is left to XAUTOCLAIM): reading it again from the group would count as a delivery,
  and a master's failover (its slots down for the cluster's node timeout) would have sent every event of its keys
  to the dead-letter stream as poison after ``max_deliveries`` back-offs (issue 10).

Keys named by the applied events that are hot are handed to ``on_hot_keys`` (each once per batch) so they are
refreshed straight away; the consumer is given that callable (in a worker node, handoff.py's `KeyPipeWriter`, the
pipe to the sidecar's `warming.hot_refresh.HotRefresher`) and knows nothing of what refreshes.

Redis errors never end the loop: it backs off (up to 5 s), then re-reads its own pending entries first. New
entries are never read with XREADGROUP BLOCK: the consumer waits with a plain XREAD BLOCK (which moves nothing) and
reads with gap.py's script, which checks, atomically, that no entry was trimmed from the stream before the group
read it; a gap is answered by dropping every cached value, counted and logged (gap.answer). The loop runs in a
daemon thread; `stop()` ends it within one wait (``block_ms``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Self

import redis

from ..config.keyspaces import KeyspaceRegistry
from ..hooks import get_hooks
from ..outcomes import InvalidationOutcome
from ..redis_layer.connections import sync_client
from ..redis_layer.keys import CONSUMER_GROUP, INVALIDATION_STREAM, KeyLayout
from ..settings import Settings
from . import gap as gaps
from .apply import Hotness, apply_events
from .dead_letters import dead_letter
from .events import Entry, Event, Rejected, field_pairs, id_order, parse_entry, stream_id
from .gap import Gap
from .stream_state import BEAT_INTERVAL, beat

log = logging.getLogger("cachewarm.invalidation")

HotKeysCallback = Callable[[list[str]], None]

MAX_BACKOFF = 5.0
# Consumers are named hostname:pid, so every worker restart adds one; those idle this long with nothing pending
# are removed from the group (removing one with pending entries would lose them, so those are left to XAUTOCLAIM).
PRUNE_IDLE_MS = 3_600_000
PRUNE_INTERVAL = 300.0
READ_AGAIN_AT = 2  # a read of this many entries or more is followed by another read, not by a wait
HANDOFF_RETRY_MS = 10  # the longest wait while hot keys wait for room in the hand-off to the refresher
HELD_ATTEMPTS = 30  # retries from memory of an entry whose application failed (~2 minutes at the 5 s back-off)


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class InvalidationConsumer:
    """Consumes the invalidation stream in the `cachewarm-workers` group until stopped."""

    def __init__(self, settings: Settings | None = None, *, keyspaces: KeyspaceRegistry | None = None,
                 name: str | None = None, on_hot_keys: HotKeysCallback | None = None, batch_size: int = 256,
                 block_ms: int = 500, claim_interval: float | None = None) -> None:
        self.settings = settings or Settings.load()
        self.keyspaces = keyspaces if keyspaces is not None else self.settings.load_keyspaces()
        self.layout = KeyLayout(self.settings.key_prefix)
        self.name = name or consumer_name()
        self.on_hot_keys = on_hot_keys
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_interval = (claim_interval if claim_interval is not None
                               else min(5.0, max(0.05, self.settings.claim_idle_ms / 2000)))
        self._hotness = Hotness(self.keyspaces, self.settings.hot_half_life, self.settings.hot_threshold)
        self.redis = sync_client(self.settings.redis_url, timeout=block_ms / 1000 + 5,
                                 cluster=self.settings.redis_cluster)
        self.stats: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._group_ready = False
        self._group_seen = False
        self._vanished = False
        self._unacked: list[str] = []  # applied entries whose XACK rides on the next read
        self._wait_from: str | None = None  # the stream's last id when the last read was not full
        self._read_own_pending = True
        self._held: dict[str, tuple[Entry, int]] = {}  # entries whose application failed: (entry, attempts)
        self._held_at = 0.0  # when they are applied again
        self._next_claim = self._next_beat = 0.0
        self._claim_cursor = "0-0"
        self._next_prune = time.monotonic() + PRUNE_INTERVAL

    # ---- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> Self:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self.run, name="cachewarm-invalidation", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def close(self) -> None:
        self.stop()
        if self._unacked:
            try:
                self.redis.xack(INVALIDATION_STREAM, CONSUMER_GROUP, *self._unacked)
                self._unacked.clear()
            except redis.RedisError:
                pass  # left pending: claimed and applied again (harmless)
        self.redis.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        """The loop: never ends on bad input or a Redis failure, only on stop()."""
        delay = 0.1
        while not self._stop.is_set():
            try:
                self.poll()
                delay = 0.1
            except redis.RedisError as exc:
                self._on_redis_error(exc)
                self._stop.wait(delay)
                delay = min(MAX_BACKOFF, delay * 2)
            except Exception:
                log.exception("invalidation consumer: unexpected error; continuing")
                self.stats["loop_errors"] += 1
                self._read_own_pending = True
                self._stop.wait(delay)
                delay = min(MAX_BACKOFF, delay * 2)

    def _on_redis_error(self, exc: redis.RedisError) -> None:
        self.stats["redis_errors"] += 1
        get_hooks().redis_error("invalidation")
        if "NOGROUP" in str(exc):
            self._group_ready = False
            self._wait_from = None
            if self._group_seen:  # the stream or the group was removed: whatever it held unread is lost
                self._vanished = True
        self._read_own_pending = True
        log.warning("invalidation consumer: redis error (%s); backing off", type(exc).__name__)

    # ---- one round ---------------------------------------------------------------------------------------------
    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(INVALIDATION_STREAM, CONSUMER_GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True
        self._group_seen = True
        if self._vanished:
            self._vanished = False
            info: Any = self.redis.xinfo_stream(INVALIDATION_STREAM)
            upper = stream_id(info["last-generated-id"])
            gaps.record_gap(self.redis, self.layout, upper, self.name, force=True)
            self.answer_gap(Gap(upper, -1, "the stream or the consumer group was removed"))

    def poll(self, block_ms: int | None = None) -> int:
        """One round (heartbeat and claim if due, own pending after an error, new entries); returns entries handled."""
        if not self._group_ready:
            self.ensure_group()
        if time.monotonic() >= self._next_beat:  # "alive" for `cachewarm status` and `invalidate` (stream_state.py)
            beat(self.redis, self.layout, self.name)
            self._next_beat = time.monotonic() + BEAT_INTERVAL
        handled = 0
        if time.monotonic() >= self._next_claim:
            handled += self._claim()
            self._next_claim = time.monotonic() + self.claim_interval
        if time.monotonic() >= self._next_prune:
            self._prune()
            self._next_prune = time.monotonic() + PRUNE_INTERVAL
        if self._held and time.monotonic() >= self._held_at:
            held = [entry for entry, _ in self._held.values()]
            return handled + self.handle(held, {})  # not read again: that would count as a delivery
        if self._read_own_pending and not self._held:
            own = self._read("0", block_ms=None)
            gone = [eid for eid, fields in own if not fields]  # deleted from the stream while pending
            if gone:
                upper = max(gone, key=id_order)
                gaps.record_gap(self.redis, self.layout, upper, self.name, force=True)
                self.answer_gap(Gap(upper, len(gone), "pending entries trimmed before they were applied"))
                self.redis.xack(INVALIDATION_STREAM, CONSUMER_GROUP, *gone)
                own = [(eid, fields) for eid, fields in own if fields]
                if not own:
                    return handled + len(gone)
            if own:
                return handled + self.handle(own, self._deliveries(own))
            self._read_own_pending = False
        wait = self.block_ms if block_ms is None else block_ms
        if getattr(self.on_hot_keys, "backlog", 0):  # a hand-off (handoff.py) that had no room for some hot keys
            self._hot_safe([])
            wait = min(wait, HANDOFF_RETRY_MS)
        new = self._read_new(wait)
        if new:
            handled += self.handle(new, {}, defer_ack=True)
        return handled

    def _read(self, start: str, *, block_ms: int | None) -> list[Entry]:
        reply: Any = self.redis.xreadgroup(CONSUMER_GROUP, self.name, {INVALIDATION_STREAM: start},
                                           count=self.batch_size, block=block_ms)
        if not reply:
            return []
        entries: list[Any] = reply[0][1]
        return [(stream_id(eid), fields or {}) for eid, fields in entries]

    def _check_and_read(self) -> tuple[list[Entry], str]:
        """New entries, read in one script with the gap check (answered first); and the stream's last id."""
        acks = self._unacked
        upper, lost, last_id, read = gaps.check_and_read(self.redis, self.layout, group=CONSUMER_GROUP,
                                                         consumer=self.name, count=self.batch_size, acks=acks)
        del acks[:len(acks)]
        if upper:
            self.answer_gap(Gap(stream_id(upper), int(lost),
                                "entries trimmed from the stream before the group read them"))
        if not read:
            return [], stream_id(last_id)
        return [(stream_id(eid), field_pairs(flat)) for eid, flat in read[0][1]], stream_id(last_id)

    def _read_new(self, block_ms: int | None) -> list[Entry]:
        """New entries. Waiting is done with a plain XREAD (which moves nothing), never XREADGROUP BLOCK: only the
        checking script moves the group's last-delivered id, so it cannot pass a hole unseen. After a read that
        was not full, the wait comes first (with the deferred acknowledgements in the same round trip): one round
        trip per wake-up, as with XREADGROUP BLOCK. While events flow (a read of READ_AGAIN_AT or more), the next
        read comes at once, without the wait: two round trips per batch (read, apply) instead of three."""
        if self._wait_from is None or not block_ms:
            entries, last_id = self._check_and_read()
            if entries or not block_ms:
                self._wait_from = self._then_wait(entries, last_id)
                return entries
            self._wait_from = last_id
        pipe = self.redis.pipeline(transaction=False)
        acks = self._unacked
        if acks:
            pipe.xack(INVALIDATION_STREAM, CONSUMER_GROUP, *acks)
        pipe.xread({INVALIDATION_STREAM: self._wait_from}, count=1, block=block_ms)
        pipe.execute()
        del acks[:len(acks)]
        # woken by a new entry, or the wait ended: check either way (a trim that left nothing to read is a gap too)
        entries, last_id = self._check_and_read()
        self._wait_from = self._then_wait(entries, last_id)
        return entries

    def _then_wait(self, entries: list[Entry], last_id: str) -> str | None:
        """Where the next round waits from, or None to read again at once: after a full read, or one of at least
        READ_AGAIN_AT entries (events are flowing: more are likely there already, and the wait's round trip is
        saved; an empty read then waits)."""
        return None if len(entries) >= min(self.batch_size, READ_AGAIN_AT) else last_id

    def answer_gap(self, gap: Gap) -> int:
        """Drops every cached value (fenced), marks the gap answered (gap.answer), and counts it."""
        dropped = gaps.answer(self.redis, self.layout, gap, consumer=self.name, fence_ttl=self.settings.fence_ttl,
                              keyspaces=self.keyspaces, half_life=self.settings.hot_half_life,
                              threshold=self.settings.hot_threshold, on_hot_keys=self._hot_safe)
        self.stats["gaps"] += 1
        self.stats["gap_keys"] += dropped
        return dropped

    def _hot_safe(self, keys: list[str]) -> None:
        if self.on_hot_keys is None:
            return
        try:
            self.on_hot_keys(keys)
        except Exception:
            log.exception("invalidation consumer: hot-key refresh failed (the gap is answered)")

    def _claim(self) -> int:
        reply: Any = self.redis.xautoclaim(INVALIDATION_STREAM, CONSUMER_GROUP, self.name,
                                           self.settings.claim_idle_ms, start_id=self._claim_cursor,
                                           count=self.batch_size)
        self._claim_cursor = stream_id(reply[0])
        deleted = [stream_id(d) for d in reply[2]] if len(reply) > 2 and reply[2] else []
        stale = gaps.stale_pending_gap(self.redis, self.layout, self.settings.claim_idle_ms)
        if deleted:  # pending entries trimmed before anyone applied them (Redis removed them from the PEL)
            upper = max(deleted, key=id_order)
            gaps.record_gap(self.redis, self.layout, upper, self.name, force=True)
            self.answer_gap(Gap(upper, len(deleted), "pending entries trimmed before they were applied"))
        elif stale is not None:  # a consumer died while answering a gap
            gaps.record_gap(self.redis, self.layout, stale, self.name, force=True)
            self.answer_gap(Gap(stale, -1, "taken over from a consumer that did not finish answering it"))
        entries = [(stream_id(eid), fields or {}) for eid, fields in reply[1]]
        if not entries:
            return 0
        self.stats["claimed"] += len(entries)
        log.info("invalidation consumer %s claimed %d idle entries", self.name, len(entries))
        return self.handle(entries, self._deliveries(entries))

    def _prune(self) -> None:
        consumers: Any = self.redis.xinfo_consumers(INVALIDATION_STREAM, CONSUMER_GROUP)
        for info in consumers:
            name = stream_id(info["name"])
            if name != self.name and int(info["pending"]) == 0 and int(info["idle"]) > PRUNE_IDLE_MS:
                self.redis.xgroup_delconsumer(INVALIDATION_STREAM, CONSUMER_GROUP, name)
                log.info("invalidation consumer %s removed from the group (idle, nothing pending)", name)

    def _deliveries(self, entries: Sequence[Entry]) -> dict[str, int]:
        ids = [eid for eid, _ in entries]
        pending: Any = self.redis.xpending_range(INVALIDATION_STREAM, CONSUMER_GROUP, min=min(ids, key=id_order),
                                            max=max(ids, key=id_order), count=len(ids) * 2 + 10,
                                            consumername=self.name)
        return {stream_id(p["message_id"]): int(p["times_delivered"]) for p in pending}

    # ---- handling ----------------------------------------------------------------------------------------------
    def handle(self, entries: Sequence[Entry], deliveries: dict[str, int], *, defer_ack: bool = False) -> int:
        """Dead-letters what cannot be applied, applies the rest, then acknowledges what was applied (with
        `defer_ack`, in the script of the next read: one round trip less per batch, still after applying)."""
        hooks = get_hooks()
        events: list[Event] = []
        dead: list[tuple[Entry, Rejected]] = []
        for entry in entries:
            eid, fields = entry
            parsed = parse_entry(eid, fields)
            times = deliveries.get(eid, 1)
            if times > self.settings.max_deliveries:
                parsed = Rejected(eid, f"delivered {times} times (max_deliveries {self.settings.max_deliveries})",
                                  parsed.kind)
            if isinstance(parsed, Rejected):
                dead.append((entry, parsed))
            else:
                events.append(parsed)
        if dead:
            dead_letter(self.redis, dead, consumer=self.name, maxlen=self.settings.stream_maxlen)
            for _, rejected in dead:
                self.stats[InvalidationOutcome.DEAD] += 1
                hooks.invalidation(rejected.kind, InvalidationOutcome.DEAD)
        if not events:
            return len(entries)
        try:
            applied = apply_events(self.redis, events, layout=self.layout, fence_ttl=self.settings.fence_ttl,
                                   hotness=self._hotness if self.on_hot_keys is not None else None,
                                   keyspaces=self.keyspaces)
        except (redis.RedisError, redis.exceptions.RedisClusterException):
            self._hold(entries, {e.entry_id for e in events})
            raise
        if applied.unreplicated:  # fence_replica_wait ran out (apply.py): applied all the same
            self.stats["unreplicated"] += applied.unreplicated
        if self.on_hot_keys is not None and applied.hot:  # first: the refresh starts before any bookkeeping
            self.stats["hot"] += len(applied.hot)
            try:
                self.on_hot_keys(applied.hot)
            except Exception:
                log.exception("invalidation consumer: hot-key refresh failed (the invalidation is applied)")
        outcomes = {e.entry_id: applied.outcomes.get(e.entry_id, InvalidationOutcome.ERROR) for e in events}
        done = [eid for eid, outcome in outcomes.items() if outcome.done]
        self._hold(entries, {eid for eid, outcome in outcomes.items() if not outcome.done})
        if done and defer_ack:
            self._unacked.extend(done)
        elif done:
            self.redis.xack(INVALIDATION_STREAM, CONSUMER_GROUP, *done)
        now_ms = time.time() * 1000
        for event in events:
            outcome = outcomes[event.entry_id]
            self.stats[outcome] += 1
            hooks.invalidation(event.kind, outcome)
            if outcome == InvalidationOutcome.ERROR:
                log.warning("invalidation %s (%s %r) failed, left pending: %s", event.entry_id, event.kind,
                            event.target[:200], applied.errors.get(event.entry_id))
            elif event.ts_ms is not None and now_ms >= event.ts_ms:
                hooks.invalidation_lag((now_ms - event.ts_ms) / 1000)
        return len(entries)

    def _hold(self, entries: Sequence[Entry], failed: set[str]) -> None:
        """Keeps the failed entries to apply again from memory after a back-off; forgets the others."""
        attempts = 0
        for entry in entries:
            previous = self._held.pop(entry[0], None)
            if entry[0] in failed:
                tries = (previous[1] if previous else 0) + 1
                if tries <= HELD_ATTEMPTS:
                    self._held[entry[0]] = (entry, tries)
                    attempts = max(attempts, tries)
                else:
                    log.warning("invalidation %s still failing after %d attempts: left to XAUTOCLAIM", entry[0],
                                HELD_ATTEMPTS)
        if attempts:
            self._held_at = time.monotonic() + min(MAX_BACKOFF, 0.1 * 2 ** (attempts - 1))
