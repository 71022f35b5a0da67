"""Warming: hot keys refreshed before their TTL runs out.

- hotkeys.py       which keys are hot (the hot set's shards, plus pins)
- scan.py          the scan: the hot keys that are due, claimed and queued in batches (task ``cachewarm.scan``)
- refresh.py       one batch's refresh: lease, fetch, fenced write, per key (with pipeline.py, context.py)
- refresh_engine.py the event loop per worker process that runs the batches (task ``cachewarm.refresh``)
- hot_refresh.py   the hot keys an invalidation names, refreshed at once by the sidecar's engine
- ratelimit.py     the shared token bucket per keyspace
- heartbeat.py     a worker's heartbeat, for lease takeover and ``cachewarm status``
"""
