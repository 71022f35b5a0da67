"""Read accounting: hit/miss counters, served-age histogram and key popularity, buffered per process.

A hit must cost what a bare GET costs, and every `redis.call` inside Lua costs microseconds of Redis's single
thread, so reads are not counted inside the read itself. Each read appends one tuple to an in-process deque (an
atomic append: no lock and no dict work on the request path); a daemon thread folds them into counters and sends
them every `stats_flush_interval` seconds in one pipeline (HINCRBYFLOATs into ``stats``, one lua/flush.lua per
hot-set shard read), the same idea as Caffeine's buffered read
recording. Counts reach Redis at most one interval late; a process killed with -9
loses at most one interval of them. Reads of one key within an interval become one weighted ZINCRBY.

Popularity is a forward-decayed count: a read at time t adds 2^((t - epoch) / half_life) to the key's score in
its shard of the keyspace's hot set, ``hot:{S#n}`` (keys.py); so score / 2^((now - epoch) / half_life) is the
number of reads, each halved per half-life since. Each shard keeps at most its share of max_tracked members, the
coldest popped first; far past its epoch it is rescaled (doubles overflow near 2^1024).

While ``cachewarm trace`` records (tracing.py), the recorder also keeps each read's time and key, and the flush
sends the sampled keys' reads as trace lines; whether a recording is on rides in the flush's pipeline.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from bisect import bisect_left
from collections import defaultdict, deque

import redis

from ..redis_layer import script_calls, scripts
from ..redis_layer.connections import REDIS_ERRORS, sync_client
from ..redis_layer.keys import KeyLayout
from ..redis_layer.popularity import half_life_ms
from . import tracing

# Age buckets (seconds) of the served-value age histogram: each hit's age is counted into one of them here (in
# Python, before the flush); metrics/cluster.py reads them back as a histogram.
AGE_BUCKETS: tuple[float, ...] = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
REBASE_HALF_LIVES = 200
LOCAL_HIT = 2  # `hit` of a read the near cache answered (a hit all the same; also counted as local_hit:S)


class AccessRecorder:
    """Per-process buffer of read accounting for one Redis and prefix; flushed by a daemon thread."""

    MAX_KEYS_PER_FLUSH = 20_000
    # Reads buffered between flushes at most; past it the oldest are dropped (a flush thread stalled for long).
    MAX_PENDING_READS = 500_000

    def __init__(self, redis_url: str, prefix: str, *, half_life: float, interval: float,
                 timeout: float, cluster: bool = False) -> None:
        self.redis_url = redis_url
        self.cluster = cluster
        self.layout = KeyLayout(prefix)
        self.half_life_ms = half_life_ms(half_life)
        self.interval = interval
        self.timeout = timeout
        self._lock = threading.Lock()
        self._counters: defaultdict[str, float] = defaultdict(float)
        self._reads: defaultdict[str, dict[str, int]] = defaultdict(dict)
        self._limits: dict[str, int] = {}
        self._fields: dict[str, tuple[str, str, str, tuple[str, ...], str]] = {}
        self._pending: deque[tuple[str, str, int, int, float]] = deque(maxlen=self.MAX_PENDING_READS)
        self._traced: deque[tuple[float, str]] = deque(maxlen=self.MAX_PENDING_READS)
        self.trace_share: float | None = None  # a recording is on (tracing.py): the share of keys it samples
        self._pid = os.getpid()
        self._client: redis.Redis | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.flush_errors = 0
        self._users = 0  # clients holding it through recorder_for
        _track(self)  # reset in a forked child (see _after_fork_all), flushed at exit

    # ---- called on every read ----
    def record(self, keyspace: str, key: str, max_tracked: int, hit: int, age_s: float) -> None:
        """hit: 0 a miss, 1 a hit in Redis, LOCAL_HIT a hit in the near cache."""
        # Every microsecond here is paid by every hit, so a read only appends (deque.append is atomic); the
        # flush thread does the counting. Forks are handled by os.register_at_fork, not a getpid() per read.
        self._pending.append((keyspace, key, max_tracked, hit, age_s))
        if self.trace_share is not None:
            self._traced.append((time.time(), key))
        if self._thread is None:
            self._start()

    def _fold(self) -> None:
        """Moves the pending reads into the counters; called with the lock held."""
        pending = self._pending
        counters, reads, limits, all_fields = self._counters, self._reads, self._limits, self._fields
        for _ in range(len(pending)):
            keyspace, key, max_tracked, hit, age_s = pending.popleft()
            fields = all_fields.get(keyspace)
            if fields is None:
                fields = all_fields[keyspace] = (
                    "hit:" + keyspace, "miss:" + keyspace, "agesum:" + keyspace,
                    tuple(f"age:{keyspace}:{i}" for i in range(len(AGE_BUCKETS) + 1)), "local_hit:" + keyspace)
            if hit:
                counters[fields[0]] += 1
                if hit == LOCAL_HIT:
                    counters[fields[4]] += 1
                counters[fields[3][bisect_left(AGE_BUCKETS, age_s)]] += 1
                counters[fields[2]] += age_s
            else:
                counters[fields[1]] += 1
            per_key = reads[keyspace]
            seen = per_key.get(key)
            if seen is not None:
                per_key[key] = seen + 1
            elif len(per_key) < self.MAX_KEYS_PER_FLUSH:
                per_key[key] = 1
            limits[keyspace] = max_tracked

    def count(self, field: str, delta: float = 1) -> None:
        with self._lock:
            self._counters[field] += delta
        if self._thread is None:
            self._start()

    # ---- flushing ----
    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():  # running, or closed: counts stay buffered
                return
            self._thread = threading.Thread(target=self._run, name="cachewarm-access-flush", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def _after_fork(self) -> None:
        # A forked child starts empty with its own connection and thread; the parent's buffer is the parent's.
        self._lock = threading.Lock()
        self._counters = defaultdict(float)
        self._reads = defaultdict(dict)
        self._pending = deque(maxlen=self.MAX_PENDING_READS)
        self._traced = deque(maxlen=self.MAX_PENDING_READS)
        self.trace_share = None
        self._client = None
        self._thread = None
        self._stop = threading.Event()
        self._pid = os.getpid()

    def flush(self) -> bool:
        """Sends what was recorded; False (and the batch dropped) when Redis fails."""
        with self._lock:
            self._fold()
            counters, self._counters = self._counters, defaultdict(float)
            reads, self._reads = self._reads, defaultdict(dict)
            limits = dict(self._limits)
            traced = [self._traced.popleft() for _ in range(len(self._traced))]
        if not counters and not reads:
            return True
        calls = script_calls.flush(self.layout, half_life_ms=self.half_life_ms,
                                   rebase_half_lives=REBASE_HALF_LIVES, reads=reads, limits=limits)
        stats = self.layout.stats
        share = self.trace_share
        trace_lines = tracing.lines(traced, share) if share is not None and traced else []
        trace_on, trace_reads = self.layout.prefix + tracing.TRACE_ON, self.layout.prefix + tracing.TRACE_READS

        def count(pipe: scripts.Pipeline) -> None:
            for name, delta in counters.items():
                pipe.hincrbyfloat(stats, name, int(delta) if float(delta).is_integer() else delta)
            if trace_lines:
                pipe.rpush(trace_reads, *trace_lines)
                pipe.ltrim(trace_reads, -tracing.MAX_LINES, -1)
                pipe.expire(trace_reads, tracing.READS_TTL)
            pipe.get(trace_on)  # last: whether a recording is on, for the reads until the next flush
        try:
            if self._client is None:
                self._client = sync_client(self.redis_url, timeout=max(self.timeout, 1.0), cluster=self.cluster)
            replies = scripts.execute(self._client, calls, count)
        except REDIS_ERRORS:
            self.flush_errors += 1
            return False
        if any(isinstance(reply, Exception) for reply in replies):
            self.flush_errors += 1
            return False
        self.trace_share = tracing.parse_share(replies[-1])
        return True

    def close(self) -> None:
        """Stops the flush thread (and waits for it), sends what is left, closes the connection."""
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(self.timeout, 1.0) + 1.0)  # at most one flush in progress
        self.flush()
        client, self._client = self._client, None
        if client is not None:
            client.close()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()


_Ident = tuple[str, str, int, float, float, float, bool]
_recorders: dict[_Ident, AccessRecorder] = {}
_recorders_lock = threading.Lock()


def recorder_for(redis_url: str, prefix: str, *, half_life: float, interval: float,
                 timeout: float, cluster: bool = False) -> AccessRecorder:
    """The process's recorder for this Redis, prefix and timing (clients share it, so counts flush together).

    The timing is part of the identity: a client asking for another flush interval or half-life gets its own
    recorder rather than silently inheriting the first client's. Each call must be matched by one
    `release_recorder` (a client's close): the last release closes the recorder."""
    ident = (redis_url, prefix, os.getpid(), half_life, interval, timeout, cluster)
    with _recorders_lock:
        rec = _recorders.get(ident)
        if rec is None:
            rec = _recorders[ident] = AccessRecorder(redis_url, prefix, half_life=half_life, interval=interval,
                                                     timeout=timeout, cluster=cluster)
        rec._users += 1
        return rec


def release_recorder(rec: AccessRecorder) -> None:
    """One user of a shared recorder is done with it; the last one closes it (thread stopped, counts sent)."""
    with _recorders_lock:
        rec._users -= 1
        if rec._users > 0:
            return
        for ident, held in list(_recorders.items()):
            if held is rec:
                del _recorders[ident]
    rec.close()


_refs: weakref.WeakSet[AccessRecorder] = weakref.WeakSet()
_process_hooks_installed = False
_hooks_lock = threading.Lock()


def _track(rec: AccessRecorder) -> None:
    """Remembers a recorder for the fork and exit handlers, installing those with the process's first recorder
    (not at import: importing cachewarm registers nothing)."""
    global _process_hooks_installed
    with _hooks_lock:
        _refs.add(rec)
        if not _process_hooks_installed:
            _process_hooks_installed = True
            os.register_at_fork(after_in_child=_after_fork_all)
            atexit.register(_flush_all)


def _after_fork_all() -> None:
    for rec in list(_refs):
        rec._after_fork()


def _flush_all() -> None:
    for rec in list(_refs):
        if rec._pid == os.getpid():
            rec.flush()

