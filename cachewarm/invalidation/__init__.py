"""Invalidation: writers publish to a stream, workers consume it (consumer group) and apply it fenced.

- publish.py      `publish_invalidation`: one XADD in the wire format (docs/INVALIDATION.md, "Wire format")
- events.py       an entry -> an Event, or the reason it is dead-lettered
- apply.py        a batch of events -> store scripts in one pipeline; which of the keys are hot
- gap.py          events trimmed before the group read them: detected in the read, answered by dropping all
- consumer.py     the consumer-group loop (read, apply, then acknowledge; claim the dead's entries; dead letters)
- hot_refresh.py  the hot keys an invalidation names, refreshed at once (what the workers hand the consumer)
"""

from __future__ import annotations

from .events import Event, Rejected, parse_entry
from .publish import publish_invalidation

__all__ = ["Event", "Rejected", "parse_entry", "publish_invalidation"]
