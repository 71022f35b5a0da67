"""Invalidation: writers publish to a stream, the workers consume it (one consumer group) and apply it fenced.

- publish.py       `publish_invalidation`: one XADD in the wire format (docs/INVALIDATION.md, "Wire format")
- events.py        an entry -> an Event, or the reason it is dead-lettered
- apply.py         a batch of events -> INVALIDATE_KEY / tag walks in one pipeline; which of the keys are hot
- gap.py           events trimmed before the group read them: detected in the read, answered by dropping all
- dead_letters.py  entries that cannot be applied, copied to the dead-letter stream with the reason
- consumer.py      the consumer-group loop (read, apply, then acknowledge; claim the dead's entries)
- handoff.py       the consumer's hot keys, through a pipe, to the process that refreshes them

What refreshes those hot keys is warming's (warming/hot_refresh.py, in the worker node's sidecar): the consumer
is handed a callable and imports nothing of warming (tests/unit/test_layering.py).
"""

from __future__ import annotations

from .events import Event, Rejected, parse_entry
from .publish import publish_invalidation

__all__ = ["Event", "Rejected", "parse_entry", "publish_invalidation"]
