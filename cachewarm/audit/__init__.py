"""The consistency auditor: compares what the cache holds with what the source has now, counts what stays
different past a grace window, says why, and repairs it (docs/AUDIT.md).

- `sampling`: which keys to audit (the keys recently read: the hot sets), each once per round;
- `budget`: the source requests it may make (``audit_budget`` and the keyspace's ``rate``, cluster-wide);
- `checking`: one comparison of a cached value with its source, by version or by content;
- `causes`: why an inconsistency happened, from what the fences and the stream show;
- `repair`: a fenced invalidation of the stale value and a refresh when it is hot;
- `ledger`: the last hour's checks and inconsistencies in Redis ("nines" for `cachewarm status`);
- `auditor`: the loop the workers' sidecar runs per keyspace; `oneshot`: `cachewarm audit`.
"""
