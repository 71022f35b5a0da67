"""Invalidation: writers publish to a stream, workers consume it (consumer group) and apply it fenced.

- publish.py   `publish_invalidation`: one XADD in the wire format of CONTRACT.md
- events.py    an entry -> an Event, or the reason it is dead-lettered
- apply.py     a batch of events -> store scripts in one pipeline; which of the keys are hot
- consumer.py  the consumer-group loop (read, apply, then acknowledge; claim the dead's entries; dead letters)
"""

from __future__ import annotations

from .events import Event, Rejected, parse_entry
from .publish import publish_invalidation

__all__ = ["Event", "Rejected", "parse_entry", "publish_invalidation"]
