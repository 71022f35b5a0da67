"""The cachewarm error tree.

    CachewarmError
    ├── ConfigError            a setting or keyspace is wrong (the CLI prints it on one line, exit 2)
    ├── InvalidKey             a key is empty, too long, or has characters cachewarm refuses
    ├── UnknownKeyspace        no keyspace pattern matches the key, so it cannot be read through
    ├── SourceError            the source failed: 5xx, timeout, connection error
    │   └── BadSourceResponse  the source answered, but not with JSON cachewarm can store
    ├── ValueNotSerializable   a value is not JSON-serialisable
    └── CacheUnavailable       Redis is unreachable for an operation that cannot fall back (set, delete, ...)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .outcomes import SourceOutcome

if TYPE_CHECKING:
    from pydantic import ValidationError


# The exit status of a process a ConfigError stopped (the CLI's commands, the worker's child processes): a parent
# does not restart a child that exited with it, since a new start would only repeat the error.
CONFIG_ERROR = 2


class CachewarmError(Exception):
    """Base of every error cachewarm raises on purpose."""


class ConfigError(CachewarmError):
    """A setting or keyspace is wrong; the message names it and says what is wrong."""


class InvalidKey(CachewarmError, ValueError):
    """A cache key is empty, too long, or holds characters cachewarm refuses."""


class UnknownKeyspace(CachewarmError, LookupError):
    """No keyspace pattern matches the key."""


class SourceError(CachewarmError):
    """The source could not give a value (5xx, timeout, connection error)."""

    def __init__(self, message: str, *, kind: str = SourceOutcome.ERROR) -> None:
        super().__init__(message)
        self.kind = kind  # a SourceOutcome value: the `kind` label of cachewarm_source_errors_total


class BadSourceResponse(SourceError):
    """The source answered with something that is not storable JSON."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind=SourceOutcome.BAD_RESPONSE)


class ValueNotSerializable(CachewarmError, TypeError):
    """A value cannot be stored because it is not JSON-serialisable."""


class CacheUnavailable(CachewarmError):
    """Redis could not be reached for an operation that has no fallback."""


def one_line(exc: ValidationError, name: Callable[[str], str], *, count_more: bool = False) -> str:
    """A pydantic validation error as the one line a ConfigError carries: ``NAME: message``, for the first error.

    `name` turns the error's dotted location (``""`` for the model itself) into the name the user wrote: an
    environment variable, a TOML field. With `count_more`, how many other errors there were is added."""
    errors = exc.errors()
    err = errors[0]
    message = "unknown field" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if count_more and len(errors) > 1 else ""
    return f"{name('.'.join(str(part) for part in err['loc']))}: {message}{more}"
