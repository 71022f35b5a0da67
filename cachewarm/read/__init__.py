"""The read path: what `Cache.get` / `AsyncCache.get` go through (`cachewarm.client` is the public face).

- _async/client.py  `AsyncCache`, the one source of both clients; _sync/client.py, `Cache`, generated from it
                    (tools/unasync.py)
- plans.py          a key's plan (its value key, its keyspace's TTLs, tags and source) and its script calls
- memo.py           the bounded memo that keeps plans
- lookup.py         `Lookup` and the read accounting of each hit and miss
- access.py         the per-process read buffer, flushed into the stats and the hot set (lua/flush.lua)
- singleflight.py   one loader per key per process
- breaker.py        reads go to the source while Redis is down
- decorated.py      the keys of `cached` functions
"""
