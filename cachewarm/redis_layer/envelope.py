"""How a cached value is stored: a short fixed-width header, then the JSON.

    <expires_ms:13>|<fetched_ms:13>|<kind:1>|<version>|<json>

``expires_ms`` is when the value stops being fresh (fetched + ttl); Redis keeps it ``max_stale`` longer so it can
be served if the source fails. ``kind`` is ``v`` for a value and ``n`` for a remembered "no such item". The fixed
widths let the Lua scripts read the expiry and version without a JSON parser, and let Python skip the header with
two slices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import ValueNotSerializable

VALUE = b"v"
NOT_FOUND = b"n"
_HEADER = 28  # 13 + 1 + 13 + 1
KIND = 28  # the kind's byte: GETRANGE key 28 28 tells a value from a remembered "no such item"
TIMES = 27  # bytes of the header that hold both times: GETRANGE key 0 26 reads them without the value


def dumps(value: Any) -> str:
    """Compact JSON; raises ValueNotSerializable for anything JSON cannot hold."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueNotSerializable(f"value is not JSON-serialisable: {exc}") from None


def encode(payload_json: str | bytes | None, *, fetched_ms: int, ttl_ms: int, version: int | None = None) -> bytes:
    """`payload_json`: JSON text, or UTF-8 JSON bytes (a source's body as it came), or None ("no such item")."""
    kind = "n" if payload_json is None else "v"
    ver = "" if version is None else str(int(version))
    if isinstance(payload_json, bytes):
        return f"{fetched_ms + ttl_ms:013d}|{fetched_ms:013d}|{kind}|{ver}|".encode() + payload_json
    return f"{fetched_ms + ttl_ms:013d}|{fetched_ms:013d}|{kind}|{ver}|{payload_json or ''}".encode()


@dataclass(frozen=True, slots=True)
class Entry:
    """A decoded envelope."""

    value: Any
    found: bool
    expires_ms: int
    fetched_ms: int
    version: int | None


def expires_ms(raw: bytes) -> int:
    """When the value stops being fresh (ms); `raw` is an envelope or at least its first `TIMES` bytes."""
    return int(raw[:13])


def fetched_ms(raw: bytes) -> int:
    """When the value was fetched from the source (ms); `raw` as for `expires_ms`."""
    return int(raw[14:27])


def value_and_fetched(raw: bytes) -> tuple[Any, int]:
    """The value (None for "no such item") and fetched_ms: `decode` without building an Entry (the hit path)."""
    value = json.loads(raw[raw.index(b"|", _HEADER + 2) + 1:]) if raw[_HEADER:_HEADER + 1] == VALUE else None
    return value, int(raw[14:27])


def decode(raw: bytes) -> Entry:
    kind = raw[_HEADER:_HEADER + 1]
    bar = raw.index(b"|", _HEADER + 2)
    version = int(raw[_HEADER + 2:bar]) if bar > _HEADER + 2 else None
    found = kind == VALUE
    value = json.loads(raw[bar + 1:]) if found else None
    return Entry(value, found, int(raw[:13]), int(raw[14:27]), version)


HEAD = 64  # bytes that hold the header with any version: GETRANGE key 0 63 reads it without the value


@dataclass(frozen=True, slots=True)
class Header:
    """An envelope's header alone (`cachewarm inspect` reads it with GETRANGE, never the value)."""

    expires_ms: int
    fetched_ms: int
    found: bool
    version: int | None


def header(raw: bytes) -> Header:
    """The header of an envelope, or of its first `HEAD` bytes."""
    bar = raw.find(b"|", _HEADER + 2)
    version = int(raw[_HEADER + 2:bar]) if bar > _HEADER + 2 else None
    return Header(int(raw[:13]), int(raw[14:27]), raw[_HEADER:_HEADER + 1] == VALUE, version)
