"""What a writer calls after committing: one XADD to the invalidation stream (wire format in
docs/INVALIDATION.md).

Any language can do the same with ``XADD cachewarm:invalidations MAXLEN ~ 1000000 * key product:42 version 7
ts 1700000000000``. The stream is trimmed approximately to ``stream_maxlen`` entries so it cannot grow without
bound when no worker runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import redis as redis_py

from ..config.keyspaces import check_key
from ..errors import CacheUnavailable
from ..redis_layer.connections import shared_client
from ..redis_layer.keys import INVALIDATION_STREAM
from ..settings import Settings
from .events import MAX_VERSION


def _default_client(settings: Settings) -> redis_py.Redis:
    """One client per Redis URL per process, so a writer publishing after every commit reuses its connection."""
    return shared_client(settings.redis_url, timeout=max(settings.redis_timeout, 1.0),
                         cluster=settings.redis_cluster)


def event_fields(key: str | None = None, *, tag: str | None = None, version: int | None = None,
                 ts_ms: int | None = None) -> dict[str, str]:
    """The stream fields of one event; raises ValueError (InvalidKey for a bad key or tag) on bad input."""
    if (key is None) == (tag is None):
        raise ValueError("give exactly one of key and tag")
    if version is not None:
        if tag is not None:
            raise ValueError("version applies to key events only")
        if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_VERSION:
            raise ValueError(f"version must be an integer between 0 and {MAX_VERSION}, not {version!r}")
    fields = {"key": check_key(key)} if key is not None else {"tag": check_key(tag)}
    if version is not None:
        fields["version"] = str(version)
    fields["ts"] = str(ts_ms if ts_ms is not None else int(time.time() * 1000))
    return fields


def publish_events(events: Sequence[dict[str, str]], *, redis: redis_py.Redis | None = None,
                   settings: Settings | None = None) -> list[str]:
    """XADDs prepared events (see `event_fields`) in one round trip; returns their stream ids."""
    settings = settings or Settings.load()
    client = redis if redis is not None else _default_client(settings)
    pipe = client.pipeline(transaction=False)
    for fields in events:
        pipe.xadd(INVALIDATION_STREAM, fields, maxlen=settings.stream_maxlen, approximate=True)  # type: ignore[arg-type]
    try:
        ids: Iterable[bytes | str] = pipe.execute()
    except redis_py.RedisError as exc:
        raise CacheUnavailable(f"could not publish to {INVALIDATION_STREAM}: {type(exc).__name__}") from None
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


def publish_invalidation(key: str | None = None, *, tag: str | None = None, version: int | None = None,
                         redis: redis_py.Redis | None = None, settings: Settings | None = None) -> str:
    """Tells every worker that `key` (or every key carrying `tag`) changed; returns the stream entry id.

    With `version` (the committed row's version), no worker or reader puts an older version back afterwards.
    Raises ValueError for bad input and CacheUnavailable when Redis cannot be reached.
    """
    return publish_events([event_fields(key, tag=tag, version=version)], redis=redis, settings=settings)[0]
