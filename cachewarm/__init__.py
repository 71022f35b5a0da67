"""cachewarm: keeps the hot part of a Redis cache warm.

Applications read through `Cache` / `AsyncCache`; Celery workers (`cachewarm.worker`) refresh hot keys before
their TTL runs out; writers call `publish_invalidation` after committing.
"""

from __future__ import annotations

from .client import AsyncCache, Cache, Lookup
from .errors import (
    BadSourceResponse,
    CacheUnavailable,
    CachewarmError,
    ConfigError,
    InvalidKey,
    SourceError,
    UnknownKeyspace,
    ValueNotSerializable,
)
from .invalidation import publish_invalidation
from .settings import Settings

__version__ = "0.1.0"

__all__ = [
    "AsyncCache",
    "BadSourceResponse",
    "Cache",
    "CacheUnavailable",
    "CachewarmError",
    "ConfigError",
    "InvalidKey",
    "Lookup",
    "Settings",
    "SourceError",
    "UnknownKeyspace",
    "ValueNotSerializable",
    "__version__",
    "publish_invalidation",
]
