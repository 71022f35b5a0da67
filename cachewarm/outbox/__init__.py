"""The transactional outbox: invalidations recorded in the application's own database, in the same transaction
as the change, and moved to the invalidation stream by a relay (`cachewarm relay`, or the workers' sidecar when
``CACHEWARM_OUTBOX_URL`` is set). See docs/WRITERS.md.

Importing this package imports no database driver: `relay` and `dialects` load psycopg or sqlite3 when used.
"""

from __future__ import annotations

from .schema import NOTIFY_CHANNEL, TABLE
from .writes import outbox_row, write_outbox

__all__ = ["NOTIFY_CHANNEL", "TABLE", "outbox_row", "write_outbox"]
