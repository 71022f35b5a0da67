"""Turning a stream entry into an invalidation event, or into the reason it cannot be one.

The wire format (docs/INVALIDATION.md, "Wire format"): exactly one of ``key`` / ``tag``; optionally ``version``
(a non-negative integer, key events only) and ``ts`` (publish time, Unix ms). Everything is checked here, before
anything is applied, so that a malformed entry is dead-lettered with a reason instead of half-applied.

Unknown fields are dead-lettered, not ignored: a misspelt ``verison`` silently ignored would drop the version
guard, and a field a newer writer adds may change what the event means. An operator sees the reason in
``cachewarm:invalidations:dead`` and can re-publish the entry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..redis_layer.keys import MAX_KEY_LENGTH

KNOWN_FIELDS = frozenset({"key", "tag", "version", "ts"})
# Lua numbers are doubles: a larger version could not be compared exactly by the scripts.
MAX_VERSION = 2**53 - 1
MAX_FIELD_BYTES = 4 * MAX_KEY_LENGTH  # a key of MAX_KEY_LENGTH characters, each up to 4 UTF-8 bytes
_INT = re.compile(r"[0-9]{1,16}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Kind = Literal["key", "tag"]
Entry = tuple[str, dict[bytes, bytes]]  # a stream entry as read: its id and its fields


def stream_id(raw: bytes | str) -> str:
    """An entry id (or any id Redis returned) as text."""
    return raw.decode() if isinstance(raw, bytes) else raw


def id_order(eid: str) -> tuple[int, int]:
    """An entry id's sort key (ids compared as their two numbers, not as text)."""
    ms, _, seq = eid.partition("-")
    return int(ms), int(seq or 0)


def field_pairs(flat: Sequence[Any]) -> dict[bytes, bytes]:
    """An entry's fields from a flat ``[name, value, ...]`` reply (a script's XREADGROUP)."""
    it = iter(flat)
    return dict(zip(it, it, strict=True))


@dataclass(frozen=True, slots=True)
class Event:
    """One understood invalidation: the key (or tag) it names, its version and publish time when given."""

    entry_id: str
    kind: Kind
    target: str
    version: int | None = None
    ts_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """An entry that cannot be applied, and why (the `reason` field of its dead-letter copy)."""

    entry_id: str
    reason: str
    kind: str = "unknown"


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8")


def _integer(name: str, raw: str) -> int | str:
    if not _INT.fullmatch(raw):
        return f"{name} must be a non-negative integer, got {raw[:40]!r}"
    value = int(raw)
    if value > MAX_VERSION:
        return f"{name} must be at most {MAX_VERSION}"
    return value


_COMMON_FIELDS = frozenset({b"key", b"version", b"ts"})


def _common_digits(raw: Any) -> int | None:
    """A version or ts as the common entry has it (1-16 ASCII digits, at most MAX_VERSION), else None."""
    if isinstance(raw, bytes) and 0 < len(raw) <= 16 and raw.isdigit():
        value = int(raw)
        if value <= MAX_VERSION:
            return value
    return None


def _parse_common(eid: str, fields: Mapping[Any, Any]) -> Event | None:
    """The common entry (bytes fields `key` with printable ASCII, and `version` / `ts` when given) parsed fast: the
    Event `parse_entry`'s full checks give it. None for anything else (the full checks then decide)."""
    raw_key = fields.get(b"key")
    if not isinstance(raw_key, bytes) or not 0 < len(raw_key) <= MAX_KEY_LENGTH or len(fields) > 3:
        return None
    if not raw_key.isascii() or not all(name in _COMMON_FIELDS for name in fields):
        return None
    target = raw_key.decode("ascii")
    if not target.isprintable():  # for ASCII: no control character (what _CONTROL refuses)
        return None
    version = ts_ms = None
    if b"version" in fields:
        version = _common_digits(fields[b"version"])
        if version is None:
            return None
    if b"ts" in fields:
        ts_ms = _common_digits(fields[b"ts"])
        if ts_ms is None:
            return None
    return Event(eid, "key", target, version, ts_ms)


def parse_entry(entry_id: bytes | str, fields: Mapping[Any, Any]) -> Event | Rejected:
    """The event an entry describes, or a Rejected with the first reason it cannot be applied."""
    eid = _text(entry_id)
    common = _parse_common(eid, fields)  # what nearly every entry is: a few microseconds less per event
    if common is not None:
        return common
    decoded: dict[str, str] = {}
    for raw_name, raw_value in fields.items():
        try:
            name = _text(raw_name)
        except UnicodeDecodeError:
            return Rejected(eid, "a field name is not valid UTF-8")
        if len(raw_value) > MAX_FIELD_BYTES:
            return Rejected(eid, f"field {name[:40]!r} is too long ({len(raw_value)} bytes > {MAX_FIELD_BYTES})")
        try:
            decoded[name] = _text(raw_value)
        except UnicodeDecodeError:
            return Rejected(eid, f"field {name[:40]!r} is not valid UTF-8")
    kind: Kind | None = "key" if "key" in decoded else "tag" if "tag" in decoded else None
    label = kind or "unknown"
    unknown = sorted(set(decoded) - KNOWN_FIELDS)
    if unknown:
        return Rejected(eid, f"unknown field(s): {', '.join(repr(u[:40]) for u in unknown[:5])}", label)
    if "key" in decoded and "tag" in decoded:
        return Rejected(eid, "both key and tag given (exactly one is allowed)", label)
    if kind is None:
        return Rejected(eid, "missing field: key or tag")
    target = decoded[kind]
    if len(target) > MAX_KEY_LENGTH:
        return Rejected(eid, f"{kind} is too long ({len(target)} characters > {MAX_KEY_LENGTH})", label)
    if not target or _CONTROL.search(target):
        return Rejected(eid, f"{kind} must be non-empty text without control characters", label)
    version: int | None = None
    if "version" in decoded:
        if kind == "tag":
            return Rejected(eid, "version applies to key events only", label)
        parsed = _integer("version", decoded["version"])
        if isinstance(parsed, str):
            return Rejected(eid, parsed, label)
        version = parsed
    ts_ms: int | None = None
    if "ts" in decoded:
        parsed = _integer("ts", decoded["ts"])
        if isinstance(parsed, str):
            return Rejected(eid, parsed, label)
        ts_ms = parsed
    return Event(eid, kind, target, version, ts_ms)
