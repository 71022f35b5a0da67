"""Python sources of the auditor's unit tests (``python:tests.support.audit_sources:NAME``)."""

from __future__ import annotations

import itertools

ITEMS: dict[str, object] = {}
_TICKS = itertools.count()


def item(id: str) -> object:
    """What ITEMS holds for the id (None: no such item)."""
    return ITEMS.get(id)


def volatile(id: str) -> object:
    """A body that differs at every read (as a timestamp in it would make it)."""
    return {"id": id, "generated": next(_TICKS)}
