"""The read-through clients: `Cache` (sync) and `AsyncCache` (async), one piece of code.

`AsyncCache` is written in cachewarm/_async/client.py; `Cache` is generated from it (cachewarm/_sync/client.py, by
tools/unasync.py), so the two cannot drift. What they share without I/O lives in plans.py (per-key plans and script
calls), lookup.py (Lookup, read accounting), breaker.py, singleflight.py and decorated.py.
"""

from __future__ import annotations

from .errors import InvalidKey
from .read._async.client import AsyncCache
from .read._sync.client import Cache
from .read.lookup import Lookup

__all__ = ["AsyncCache", "Cache", "InvalidKey", "Lookup"]
