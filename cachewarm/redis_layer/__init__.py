"""The Redis layer: how values, fences, leases and counters live in Redis, and how they are changed.

Nothing here reads settings or keyspaces: callers hand it URLs, prefixes and numbers.

- keys.py          the key layout (`KeyLayout`, every key under one prefix, hash tags per key / shard)
- envelope.py      the value format: a fixed-width header (expiry, fetch time, kind, version) before the JSON
- lua/             every multi-step change, one script each (KEYS, ARGV and reply named at the top of each file;
                   preamble.lua holds the helpers they share)
- scripts.py       running them: loading, the one NOSCRIPT retry, pipelines
- script_calls.py  the typed call of each script (its KEYS built from the layout, its reply parsed)
- popularity.py    the forward-decayed read counts of the hot set, and the one rule of what is hot
- connections.py   redis-py clients (standalone, Cluster, Sentinel; sync and asyncio) with cachewarm's retries
- sentinel.py      ``redis+sentinel://`` URLs
- urls.py          URLs as printed (passwords masked)

A hit is a plain GET; a miss is ACQUIRE (the fresh value, or the lease and a fence token, or a place among the
waiters), then WRITE (stored only if the fence token is unchanged and the version does not go back). Refreshes
take LEASE and end in WRITE or REMOVE; invalidations run INVALIDATE_KEY (bump the fence, raise the version
floor, delete), a tag's walk TAG_MEMBERS steps over the tag's set (ENLIST keeps members in it).
"""
