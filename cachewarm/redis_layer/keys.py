"""Every Redis key cachewarm writes, in one place, laid out so that it works unchanged on one Redis or a Cluster.

All keys live under one prefix (``cachewarm:`` unless ``CACHEWARM_KEY_PREFIX`` says otherwise) so that a Redis ACL
user for applications can be limited to ``~cachewarm:*`` and nothing else. The invalidation streams' names are
part of the wire contract and do not move with the prefix.

Layout (``P`` is the prefix, ``K`` a cache key such as ``product:42``, ``S`` a keyspace name, ``T`` a tag, ``n`` a
hot-set shard, 0 <= n < HOT_SHARDS, ``n = crc32(K) % HOT_SHARDS``)::

    P v:{K}          string   the value envelope (see envelope.py); PTTL = ttl + max_stale
    P f:{K}          hash     the key's fence: g = generation (bumped by every invalidation of the key or of one
                              of its tags; a missing fence is made with a generation from Redis's clock, so it
                              never repeats one: eviction, ARCHITECTURE.md), v = highest version seen, u = the
                              newest generation no version covers (its making, a bump without a version: a write
                              of version >= v whose token is not older than u passes the fence, lua/preamble.lua),
                              r = "<fetched ms>|<worker id>" of the last refresh that wrote the value (lua/write.lua;
                              a reader's load leaves it: `cachewarm inspect`), i = Redis ms of the last bump
                              (the auditor tells "raced" from "missed" by it, audit/causes.py);
                              TTL = fence_ttl, refreshed on every bump (made by a load: the value's life)
    P l:{K}          string   the load lease: random token, SET NX PX lease_ms (one loader per key cluster-wide)
    P w:{K}          list     wake-up tokens for readers waiting on a lease (BLPOP), short TTL
    P n:{K}          string   number of readers waiting on K's lease
    P claim:{K}      string   scan's claim on a due key: at most one enqueue per claim window
    P t:{T}          zset     keys carrying tag T (enlisted before each load's fence is read), score = ms until
                              which the member stays (its value's life + TAG_GRACE_MS); TTL: the longest
    P hot:{S#n}      zset     decayed popularity of shard n of S's keys (member = K), at most max_tracked / 16
    P hot:{S#n}:epoch string  the epoch (ms) that shard n's scores are relative to
    P seen:{S#n}     hash     K -> its hot score at its last refresh (unchanged at the next one: nobody read it
                              in between, the refresh was wasted); fields dropped with cold members
    P pin:S          set      keys pinned always-warm by `cachewarm warm`
    P stats          hash     cluster-wide read counters: "hit:S", "miss:S", "stale:S", "age:S:<bucket>"
    P refresh:stats  hash     worker-side counters kept cluster-wide (late, wasted, backlog, gaps; the source's
                              measured latency, the refresh budget's bucket and left-out keys: warming/value.py,
                              warming/budget.py)
    P trace:on       string   while `cachewarm trace` records: the share of keys sampled (TTL: turns itself off)
    P trace:reads    list     sampled reads as "<ms> <key>" lines, pushed by each process's flush, drained by the
                              command (read/tracing.py)
    P scan:lock      string   one scan at a time cluster-wide (two beats by mistake are harmless)
    P rate:S         hash     the keyspace's shared token bucket for source requests
    P audit:rate:S   hash     the auditor's token bucket of keyspace S (its audit_budget), shared by every worker
    P audit:m:<min>  hash     the audits of one minute (Unix minutes): "checks:S", "bad:S" (inconsistencies),
                              "repairs:S"; TTL two hours (`cachewarm status`: the last hour's nines)
    P stats:history  zset     snapshots of the read counters (member JSON, score ms), for hit ratios since a time
    P stats:history:lock  string  elects the one process that adds this interval's snapshot (SET NX PX)
    P invalidation:gap{cachewarm:invalidations}  hash  the stream's gap record (gap.py), in the stream's slot
    P workers:<id>   string   a worker's heartbeat, with a TTL
    P consumer:<name> string  an invalidation consumer's heartbeat, with a TTL (invalidation/stream_state.py: XINFO
                              CONSUMERS' idle time stands still on a quiet stream before Redis 7.2)
    cachewarm:invalidations        stream  invalidation events (wire contract)
    cachewarm:invalidations:dead   stream  entries that could not be applied, with the reason

**Slots.** In a Redis Cluster a script call declares keys of one hash slot, so every script here, called for one
item, touches one slot (node_calls.py runs one call for the items of one node, their keys passed in ARGV): the
structures of one key share the hash tag ``{K}`` (a script on K touches only them); a shard's hot set, epoch and
seen hash share ``{S#n}``; the gap record shares the stream's slot (its tag is the stream's whole name, which
Redis hashes whole); every other key is used alone. A prefix containing ``{`` or ``}`` is refused (settings.py),
since it would move the tag. (A key starting with ``}`` has an empty tag, which Redis ignores: on a Cluster its
structures may land in different slots and its scripts fail with CROSSSLOT; on one Redis nothing changes.)

**Hot spots.** Per read, nothing but the value's GET touches Redis. What is written per key read (the popularity
ZINCRBY of each process's flush) is spread over ``HOT_SHARDS`` shards per keyspace, and so over every node; the
scan, `cachewarm status` and the metrics read all shards (one pipeline) and merge them. The remaining singletons
are written per process flush (``stats``, every 0.25 s per process), per refresh batch (``refresh:stats``), per
scan or per worker, never per key or per read, so none of them grows with the traffic: at 1,000 client processes,
``stats`` takes 4,000 calls/s, a few percent of one node. The invalidation stream is one key by contract, so one
slot; its rate limit is the subject of docs/SCALING.md.

**Tags across slots.** A tag's set lives in the tag's slot, its members' fences in theirs, so a tag invalidation
cannot bump them all in one script. Instead a load (read miss or refresh) of a tagged key first enlists the key in
each tag's set (ENLIST: ZADD, in the tag's slot) and only then reads its fence token with its lease; a tag
invalidation walks the tag's set (ZSCAN steps) and bumps each member's fence (and deletes its value) in the
member's slot. Why this still
fences every load in flight of a tagged key, including a key loaded for the first time during the invalidation
(the writer publishes after committing):

- a load enlisted before the walk started is a member for the whole walk, which ZSCAN guarantees to return, so
  the walk bumps its fence: if the load read its token before that bump, its write is refused; if after, it
  fetched after the bump, so after the commit;
- a load enlisted after the walk started read its token after enlisting, so after the invalidation started, so
  after the commit: what it fetched is new.

The walk does not remove members (a load of one may still be in flight): a member stays until its score, its
value's lifetime plus TAG_GRACE_MS from its enlisting (ENLIST drops members whose time is up), so a load slower
than ten minutes is the only one a walk could miss; a write enlists its key again, in the same pipeline, which
only extends its stay. A writer's `set` enlists before writing, as a load does.
"""

from __future__ import annotations

import zlib

DEFAULT_PREFIX = "cachewarm:"
INVALIDATION_STREAM = "cachewarm:invalidations"
DEAD_LETTER_STREAM = "cachewarm:invalidations:dead"
CONSUMER_GROUP = "cachewarm-workers"
MAX_KEY_LENGTH = 1024


HOT_SHARDS = 16  # hot-set shards per keyspace; fixed (changing it orphans popularity, rebuilt within a half-life)
TAG_GRACE_MS = 600_000  # a tag member outlives its value's px by this much (covers loads in flight: keys.py doc)
_GAP_TAG = "{" + INVALIDATION_STREAM + "}"  # Redis hashes a tag-less key whole: this tag is the stream's slot


def shard_of(key: str) -> int:
    """The hot-set shard of a cache key."""
    return zlib.crc32(key.encode("utf-8", "surrogateescape")) % HOT_SHARDS


class KeyLayout:
    """Builds the Redis key names for one prefix."""

    __slots__ = ("claim_prefix", "fence_prefix", "lease_prefix", "prefix", "refresh_stats", "scan_lock",
                 "stats", "tag_prefix", "value_prefix", "waiters_prefix", "wake_prefix")

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        # Per-key names are prefix + "{" + K + "}": the *_prefix attributes end with the brace.
        self.value_prefix = prefix + "v:{"
        self.fence_prefix = prefix + "f:{"
        self.lease_prefix = prefix + "l:{"
        self.wake_prefix = prefix + "w:{"
        self.waiters_prefix = prefix + "n:{"
        self.tag_prefix = prefix + "t:{"
        self.claim_prefix = prefix + "claim:{"
        self.stats = prefix + "stats"
        self.refresh_stats = prefix + "refresh:stats"
        self.scan_lock = prefix + "scan:lock"

    def value(self, key: str) -> str:
        return self.value_prefix + key + "}"

    def fence(self, key: str) -> str:
        return self.fence_prefix + key + "}"

    def lease(self, key: str) -> str:
        return self.lease_prefix + key + "}"

    def wake(self, key: str) -> str:
        return self.wake_prefix + key + "}"

    def waiters(self, key: str) -> str:
        return self.waiters_prefix + key + "}"

    def tag(self, tag: str) -> str:
        return self.tag_prefix + tag + "}"

    def claim(self, key: str) -> str:
        return self.claim_prefix + key + "}"

    @staticmethod
    def key_of(name: bytes, prefix: str) -> str:
        """The cache key inside a per-key name (prefix: one of the *_prefix attributes)."""
        return name.decode("utf-8", "surrogateescape")[len(prefix):-1]

    def hot(self, keyspace: str, shard: int) -> str:
        return f"{self.prefix}hot:{{{keyspace}#{shard}}}"

    def hot_epoch(self, keyspace: str, shard: int) -> str:
        return f"{self.prefix}hot:{{{keyspace}#{shard}}}:epoch"

    def seen(self, keyspace: str, shard: int) -> str:
        return f"{self.prefix}seen:{{{keyspace}#{shard}}}"

    def pinned(self, keyspace: str) -> str:
        return f"{self.prefix}pin:{keyspace}"

    def stats_history(self) -> str:
        return self.prefix + "stats:history"

    def stats_history_lock(self) -> str:
        return self.prefix + "stats:history:lock"

    def invalidation_gap(self) -> str:
        return self.prefix + "invalidation:gap" + _GAP_TAG

    def rate(self, keyspace: str) -> str:
        return f"{self.prefix}rate:{keyspace}"

    def audit_rate(self, keyspace: str) -> str:
        return f"{self.prefix}audit:rate:{keyspace}"

    def audit_minute(self, minute: int) -> str:
        return f"{self.prefix}audit:m:{minute}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}workers:{worker_id}"

    def consumer(self, name: str) -> str:
        return f"{self.prefix}consumer:{name}"
