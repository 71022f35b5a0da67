"""Every Redis key cachewarm writes, in one place.

All keys live under one prefix (``cachewarm:`` unless ``CACHEWARM_KEY_PREFIX`` says otherwise) so that a Redis ACL
user for applications can be limited to ``~cachewarm:*`` and nothing else. The invalidation stream's name is part
of the wire contract and does not move with the prefix.

Layout (``P`` is the prefix, ``K`` a cache key such as ``product:42``, ``S`` a keyspace name, ``T`` a tag)::

    P v:K            string   the value envelope (see envelope.py); PTTL = ttl + max_stale
    P f:K            hash     the key's fence: g = generation (bumped by every invalidation), v = highest
                              version seen; TTL = fence_ttl, refreshed on every bump
    P l:K            string   the load lease: random token, SET NX PX lease_ms (one loader per key cluster-wide)
    P w:K            list     wake-up tokens for readers waiting on a lease (BLPOP), short TTL
    P n:K            string   number of readers waiting on K's lease
    P t:T            set      keys currently carrying tag T; TTL follows the longest-lived member
    P tg:T           string   the tag's generation (bumped by a tag invalidation); part of every fence token
    P stats          hash     cluster-wide read counters: "hit:S", "miss:S", "stale:S", "age:S:<bucket>"
    P hot:S          zset     decayed popularity of S's keys (member = K), at most max_tracked members
    P hot:S:epoch    string   the epoch (ms) that hot:S scores are relative to
    P pin:S          set      keys pinned always-warm by `cachewarm warm`
    P claim:K        string   scan's claim on a due key: at most one enqueue per claim window
    P scan:lock      string   one scan at a time cluster-wide (two beats by mistake are harmless)
    P rate:S         hash     the keyspace's shared token bucket for source requests
    P refresh:stats  hash     worker-side counters kept cluster-wide (late, wasted, backlog)
    P stats:history  zset     snapshots of the read counters (member JSON, score ms), for hit ratios since a time
    P stats:history:lock  string  elects the one process that adds this interval's snapshot (SET NX PX)
    P invalidation:gap    hash    the invalidation stream's gap record: found, pending and answered (gap.py)
    P seen:S         hash     K -> its hot:S score at its last refresh (unchanged at the next one: nobody read
                              it in between, the refresh was wasted); fields dropped with cold members
    P workers:<id>   string   a worker's heartbeat, with a TTL
    cachewarm:invalidations        stream  invalidation events (wire contract)
    cachewarm:invalidations:dead   stream  entries that could not be applied, with the reason
"""

from __future__ import annotations

DEFAULT_PREFIX = "cachewarm:"
INVALIDATION_STREAM = "cachewarm:invalidations"
DEAD_LETTER_STREAM = "cachewarm:invalidations:dead"
CONSUMER_GROUP = "cachewarm-workers"
MAX_KEY_LENGTH = 1024


class KeyLayout:
    """Builds the Redis key names for one prefix."""

    __slots__ = ("claim_prefix", "fence_prefix", "lease_prefix", "prefix", "refresh_stats", "scan_lock",
                 "stats", "tag_gen_prefix", "tag_prefix", "value_prefix", "waiters_prefix", "wake_prefix")

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self.value_prefix = prefix + "v:"
        self.fence_prefix = prefix + "f:"
        self.lease_prefix = prefix + "l:"
        self.wake_prefix = prefix + "w:"
        self.waiters_prefix = prefix + "n:"
        self.tag_prefix = prefix + "t:"
        self.tag_gen_prefix = prefix + "tg:"
        self.claim_prefix = prefix + "claim:"
        self.stats = prefix + "stats"
        self.refresh_stats = prefix + "refresh:stats"
        self.scan_lock = prefix + "scan:lock"

    def value(self, key: str) -> str:
        return self.value_prefix + key

    def fence(self, key: str) -> str:
        return self.fence_prefix + key

    def lease(self, key: str) -> str:
        return self.lease_prefix + key

    def wake(self, key: str) -> str:
        return self.wake_prefix + key

    def waiters(self, key: str) -> str:
        return self.waiters_prefix + key

    def tag(self, tag: str) -> str:
        return self.tag_prefix + tag

    def tag_gen(self, tag: str) -> str:
        return self.tag_gen_prefix + tag

    def claim(self, key: str) -> str:
        return self.claim_prefix + key

    def hot(self, keyspace: str) -> str:
        return f"{self.prefix}hot:{keyspace}"

    def hot_epoch(self, keyspace: str) -> str:
        return f"{self.prefix}hot:{keyspace}:epoch"

    def pinned(self, keyspace: str) -> str:
        return f"{self.prefix}pin:{keyspace}"

    def stats_history(self) -> str:
        return self.prefix + "stats:history"

    def stats_history_lock(self) -> str:
        return self.prefix + "stats:history:lock"

    def invalidation_gap(self) -> str:
        return self.prefix + "invalidation:gap"

    def seen(self, keyspace: str) -> str:
        return f"{self.prefix}seen:{keyspace}"

    def rate(self, keyspace: str) -> str:
        return f"{self.prefix}rate:{keyspace}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}workers:{worker_id}"
