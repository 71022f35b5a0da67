"""The economy simulator: reads of a trace replayed through a model of the scan, its refreshes, TTLs and misses.

- trace.py   the trace format (``<milliseconds> <key>`` per line, plain or .gz), its header, key sampling
- model.py   one keyspace's cache under cachewarm, replayed read by read (and the true-rate reference)
- run.py     candidates (``--set KEYSPACE.FIELD=VALUE``) over a trace's keyspaces: `cachewarm simulate`
"""
