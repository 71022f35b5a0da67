"""The dead-letter stream: entries the consumer cannot apply, copied with the reason, then acknowledged.

An entry that cannot be parsed (events.py), or that was delivered more than ``max_deliveries`` times, goes to
``cachewarm:invalidations:dead`` with fields ``reason``, ``original_id`` and ``consumer`` beside its own (a field
of its own by one of those names is kept as ``original:NAME``; fields longer than MAX_DEAD_FIELD_BYTES are cut and
the copy marked ``truncated``), and is acknowledged: it never stops the consumer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis

from ..redis_layer import scripts
from ..redis_layer.keys import CONSUMER_GROUP, DEAD_LETTER_STREAM, INVALIDATION_STREAM
from .events import Entry, Rejected

log = logging.getLogger("cachewarm.invalidation")

MAX_DEAD_FIELD_BYTES = 4096  # longer original fields are cut in the dead-letter copy (a 1 MB key stays out)


def dead_letter(client: redis.Redis, dead: Sequence[tuple[Entry, Rejected]], *, consumer: str, maxlen: int) -> None:
    """Copies each entry to the dead-letter stream (trimmed to about `maxlen`) and acknowledges it; logs each."""
    # One MULTI on one Redis; on a Redis Cluster the two streams are in two slots, so the copies go first and
    # the XACKs after them (a crash in between delivers an entry again: dead-lettered twice, never lost).
    cluster = scripts.is_cluster(client)
    pipe = client.pipeline(transaction=not cluster)
    acks = client.pipeline(transaction=False) if cluster else pipe
    for (eid, fields), rejected in dead:
        copy: dict[Any, Any] = {"reason": rejected.reason, "original_id": eid, "consumer": consumer}
        for name, value in fields.items():
            if len(value) > MAX_DEAD_FIELD_BYTES:
                copy["truncated"] = "1"
                value = value[:MAX_DEAD_FIELD_BYTES]
            copy[name if name not in (b"reason", b"original_id", b"consumer", b"truncated")
                 else b"original:" + name] = value
        pipe.xadd(DEAD_LETTER_STREAM, copy, maxlen=maxlen, approximate=True)
        acks.xack(INVALIDATION_STREAM, CONSUMER_GROUP, eid)
    pipe.execute()
    if acks is not pipe:
        acks.execute()
    for _, rejected in dead:
        log.warning("invalidation %s dead-lettered: %s", rejected.entry_id, rejected.reason)
