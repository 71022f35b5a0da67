"""Warming: hot keys refreshed before their TTL runs out.

- hotkeys.py       which keys are hot (the hot set's shards, plus pins)
- value.py         what a refresh is worth: expected reads before the next one x the miss cost, against refresh_worth
- budget.py        the refresh budget: the scan's token bucket, the most valuable due keys first
- scan.py          the scan: the hot keys that are due, claimed and queued in batches (task ``cachewarm.scan``)
- refresh.py       one batch's refresh: lease, fetch, fenced write, per key (with pipeline.py, context.py)
- refresh_engine.py the event loop per worker process that runs the batches (task ``cachewarm.refresh``)
- hot_refresh.py   the hot keys an invalidation names, refreshed at once by the sidecar's engine
- ratelimit.py     the shared token bucket per keyspace
- heartbeat.py     a worker's heartbeat, for lease takeover and ``cachewarm status``
"""
