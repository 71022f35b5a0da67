"""How values, fences and leases live in Redis: what the scripts of the read and write paths do.

Each script is one round trip and atomic; its text is in cachewarm/lua/ (KEYS, ARGV and reply documented at the
top of each file), its typed call in script_calls.py. The key layout is in keys.py; the value format in envelope.py.

- A hit is a plain GET; its accounting is buffered and flushed in batches (access.py, lua/flush.lua).
- ACQUIRE (a miss): the fresh value if another loader just wrote it; else the key's lease and its fence token;
  else a place among the waiters, who are woken through a list (BLPOP) instead of polling.
- WRITE (a load or a refresh): stores the value only if the fence token taken before the fetch is unchanged (no
  invalidation of the key or of its tags since) and the version does not go back; then releases the lease and
  wakes the waiters.
- INVALIDATE_KEY / TAG_BUMP + TAG_DRAIN: bump generations (fencing every load in flight) and delete values. A tag
  invalidation bumps the tag's generation first (fencing loads in flight of every key carrying it); each call
  then returns the next members of the tag's set, which the following TAG_DRAIN invalidates (their keys in KEYS)
  and removes from the set, until the set is empty.
"""

from __future__ import annotations

# Age buckets (seconds) of the served-value age histogram: access.py counts each hit's age into one of them (in
# Python, before the flush), metrics/cluster.py reads them back as a histogram.
AGE_BUCKETS: tuple[float, ...] = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
