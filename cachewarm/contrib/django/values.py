"""What a value may be, and whose error it is when it cannot: keyspace values are JSON that other languages read
too (refused, naming what and where, when JSON would not give them back as they are); Django's own are pickled,
small ones on the event loop and the rest in a thread; `incr` of a value that is not an integer is the caller's
error, not an outage."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from ...errors import ValueNotSerializable

# Pickled (and unpickled) in place by the async twins: exact numbers, and str/bytes up to this size. Anything
# else goes to a thread (Work): a container may hold anything, a model instance or a queryset may run SQL.
INLINE_BYTES = 16 * 1024
_INLINE_NUMBERS = (int, float, bool, type(None))


class NotAnInteger(redis.ResponseError, TypeError):
    """`incr`/`decr` of a value that is not an integer: Django's TypeError, and the ResponseError that Django's
    Redis backend raises for it (code written for either catches it)."""


def inline(value: Any) -> bool:
    kind = type(value)
    if kind in _INLINE_NUMBERS:
        return True
    return (kind is str or kind is bytes) and len(value) <= INLINE_BYTES


def exact_json(value: Any, key: str, depth: int = 0) -> None:
    """Refuses what JSON would not give back as it is (a tuple comes back a list, {1: 2} as {"1": 2}) or cannot
    hold at all, naming what and where: a keyspace value is stored as JSON (other languages read it too)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return
    if kind is float:
        if not math.isfinite(value):
            raise ValueNotSerializable(f"keyspace key {key[:100]!r}: {value!r} is not a JSON number")
        return
    if depth > 100:
        raise ValueNotSerializable(f"keyspace key {key[:100]!r}: value nested more than 100 levels deep")
    if kind is list:
        for item in value:
            exact_json(item, key, depth + 1)
        return
    if kind is dict:
        for name, item in value.items():
            if type(name) is not str:
                raise ValueNotSerializable(
                    f"keyspace key {key[:100]!r}: dict key {name!r} is not a str (JSON object keys are strings; "
                    "it would come back as another key)")
            exact_json(item, key, depth + 1)
        return
    hint = " (it would come back as a list)" if isinstance(value, tuple) else ""
    raise ValueNotSerializable(
        f"keyspace key {key[:100]!r}: a {kind.__name__} is not a JSON value{hint}; values of keyspace keys are "
        "stored as JSON (str, int, float, bool, list, dict with str keys): use another key for other values")


@contextmanager
def not_an_integer(key: Any, delta: int) -> Iterator[None]:
    """INCRBY refused for the value it found (pickled, not an integer; another type; past 64 bits): the caller's
    error. Redis's more specific refusals (NOPERM ...) are not about the value and go through."""
    try:
        yield
    except redis.ResponseError as exc:
        if type(exc) is not redis.ResponseError:
            raise
        raise NotAnInteger(f"Key '{key}': cannot add {delta} to its value: it is not an integer, or the sum would "
                           f"pass 64 bits (Redis: {exc})") from None
