"""Keyspaces: which keys exist, where their values come from, how long they live.

A keyspace is one ``[keyspaces.NAME]`` table of the TOML file. Its pattern (``product:{id}``) both recognises keys
and names their parameters, which fill the source URL and the tag templates.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Formatter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ..errors import ConfigError, InvalidKey, UnknownKeyspace, one_line
from ..redis_layer.keys import MAX_KEY_LENGTH
from .sources import build_source

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# Placeholders match one segment: no ':' (the separator), no braces, no control characters.
_SEGMENT = r"[^:{}\x00-\x1f\x7f]+"
# The exchange rate of refresh by value (warming/value.py): seconds of reader waiting a refresh must save.
DEFAULT_REFRESH_WORTH = 0.025
AUDIT_BUDGET = 0.5  # default audit source requests/s per keyspace: small, on (docs/AUDIT.md)


def placeholders(template: str) -> list[str]:
    """The ``{names}`` of a template, in order; raises ValueError on a malformed template."""
    names: list[str] = []
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"malformed template {template!r}: {exc}") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or spec or conversion:
            raise ValueError(f"malformed placeholder {{{name}}} in {template!r}")
        names.append(name)
    return names


class KeyspaceConfig(BaseModel):
    """One keyspace table as written in TOML; unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str
    source: str
    ttl: float = Field(gt=0)
    refresh_ahead: float = Field(0.0, ge=0)
    tags: tuple[str, ...] = ()
    max_stale: float = Field(0.0, ge=0, description="seconds an expired value may still be served on failure")
    negative_ttl: float | None = Field(None, ge=0, description="seconds a 404 is remembered")
    version_field: str | None = Field(None, description="top-level JSON field holding the value's version")
    rate: float | None = Field(None, ge=0, description="source requests per second, all workers together")
    concurrency: int | None = Field(None, gt=0, description="source requests in flight per worker")
    timeout: float | None = Field(None, gt=0, description="timeout of one source request")
    max_tracked: int | None = Field(None, gt=0, description="hot keys tracked at most")
    local: bool = Field(False, description="keep a copy of hot values in each process's memory (near cache)")
    local_max_entries: int = Field(10_000, gt=0, description="local copies one process keeps at most")
    local_max_bytes: int = Field(64 * 1024 * 1024, gt=0, description="bytes of local copies one process keeps")
    refresh_worth: float = Field(DEFAULT_REFRESH_WORTH, description=(
        "seconds of reader waiting a refresh must be expected to save (expected reads before the next refresh x "
        "miss_cost) to be worth its source request; 0: every key above CACHEWARM_HOT_THRESHOLD (docs/ECONOMY.md)"))
    miss_cost: float | None = Field(None, description=(
        "seconds a miss makes its reader wait; unset: the source latency the refreshes measure"))
    refresh_budget: float | None = Field(None, description=(
        "source requests per second the scan's refreshes may spend, the most valuable due keys first; unset: none"))
    fence_replica_wait: float = Field(0.0, ge=0, le=4, description=(
        "seconds the invalidation consumer waits (WAIT 1) for a replica to hold the fence bumps and version floors "
        "it applied to this keyspace's keys, so a failover cannot lose them (docs/SCALING.md); 0: no wait; at most "
        "4 (the consumer's Redis timeout is 5 s more than its read wait: a longer WAIT would break its connection)"))
    # The consistency auditor (cachewarm/audit/, docs/AUDIT.md).
    audit_budget: float = Field(AUDIT_BUDGET, ge=0, description=(
        "source requests per second the workers' auditor spends on this keyspace, all workers together, counted "
        "against `rate` too; 0 turns the auditor off"))
    audit_repair: bool = Field(True, description="invalidate (and refresh if hot) a value the auditor found stale")
    audit_grace: float | None = Field(None, ge=0, le=3600, description=(
        "seconds a mismatch is given to resolve itself before it counts; unset: from the invalidation lag measured"))

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        names = placeholders(value)
        if not names:
            raise ValueError(f"pattern {value!r} has no {{placeholder}}")
        if len(set(names)) != len(names):
            raise ValueError(f"pattern {value!r} repeats a placeholder")
        if re.search(r"\}\{", value):
            raise ValueError(f"pattern {value!r} has two placeholders with nothing between them")
        return value

    @field_validator("refresh_worth")
    @classmethod
    def _refresh_worth(cls, value: float) -> float:
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"refresh_worth = {value} must be a number of seconds >= 0 (e.g. 0.025: a refresh must "
                             "save readers 25 ms of waiting; 0 refreshes every key above CACHEWARM_HOT_THRESHOLD)")
        return value

    @field_validator("miss_cost", "refresh_budget")
    @classmethod
    def _positive(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and (not value > 0 or value == float("inf")):
            what = ("seconds a miss costs its reader, e.g. 0.05; remove it to use the measured source latency"
                    if info.field_name == "miss_cost" else
                    "source requests per second, e.g. 50; remove it for no budget")
            raise ValueError(f"{info.field_name} = {value} must be > 0 ({what})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> KeyspaceConfig:
        if self.refresh_ahead >= self.ttl:
            raise ValueError(f"refresh_ahead ({self.refresh_ahead}) must be less than ttl ({self.ttl})")
        if "audit_budget" in self.model_fields_set and self.rate is not None and 0 < self.rate < self.audit_budget:
            raise ValueError(f"audit_budget ({self.audit_budget}) is above rate ({self.rate}): audit requests count "
                             f"against the rate budget; lower audit_budget (0 turns the auditor off) or raise rate")
        if self.audit_grace is not None and self.audit_grace >= self.ttl:
            raise ValueError(f"audit_grace ({self.audit_grace}) must be less than ttl ({self.ttl}): a value would "
                             f"expire before the auditor's second look; lower audit_grace or leave it unset")
        bounds = {"local_max_entries", "local_max_bytes"} & self.model_fields_set
        if bounds and not self.local:
            raise ValueError(f"{', '.join(sorted(bounds))} needs local = true")
        if self.refresh_budget is not None and self.rate is not None and 0 < self.rate < self.refresh_budget:
            raise ValueError(f"refresh_budget ({self.refresh_budget:g}/s) is more than rate ({self.rate:g}/s), "
                             "which caps every refresh first: lower refresh_budget to at most rate, or raise rate")
        known = set(placeholders(self.pattern))
        if not (self.source.startswith(("http://", "https://")) or self.source.startswith("python:")):
            raise ValueError(f"source {self.source!r} must start with http://, https:// or python:")
        for what, template in [("source", self.source)] + [("tag", t) for t in self.tags]:
            for name in placeholders(template):
                if name not in known:
                    raise ValueError(f"{what} {template!r} uses {{{name}}}, which the pattern does not have")
        return self


@dataclass(frozen=True, slots=True)
class Keyspace:
    """A validated keyspace, ready to match keys and build their source requests."""

    name: str
    config: KeyspaceConfig
    regex: re.Pattern[str] = field(repr=False)
    tag_templates: tuple[str, ...] = ()

    @property
    def ttl(self) -> float:
        return self.config.ttl

    @property
    def refresh_ahead(self) -> float:
        return self.config.refresh_ahead

    @property
    def max_stale(self) -> float:
        return self.config.max_stale

    @property
    def audit_budget(self) -> float:
        """Audit source requests/s: the setting, never above the keyspace's rate (the default's case)."""
        rate = self.config.rate
        return min(self.config.audit_budget, rate) if rate else self.config.audit_budget

    def match(self, key: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(key)
        return found.groupdict() if found else None

    def tags_for(self, params: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(t.format_map(params) for t in self.tag_templates)


def _compile(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    pos = 0
    for found in _PLACEHOLDER.finditer(pattern):
        parts.append(re.escape(pattern[pos:found.start()]))
        parts.append(f"(?P<{found.group(1)}>{_SEGMENT})")
        pos = found.end()
    parts.append(re.escape(pattern[pos:]))
    return re.compile("".join(parts))


def _steps(pattern: str) -> list[str | None]:
    """The pattern as one step per literal character, None for each placeholder (one or more segment characters)."""
    steps: list[str | None] = []
    pos = 0
    for found in _PLACEHOLDER.finditer(pattern):
        steps += [*pattern[pos:found.start()], None]
        pos = found.end()
    return steps + list(pattern[pos:])


def _moves(steps: list[str | None], at: int) -> list[tuple[str | None, int]]:
    """From position `at`: (a literal character or None: any segment character, the next position)."""
    moves: list[tuple[str | None, int]] = []
    if at < len(steps):
        moves.append((steps[at], at + 1))
    if at > 0 and steps[at - 1] is None:  # still inside the placeholder just entered
        moves.append((None, at))
    return moves


def _segment_char(char: str) -> bool:
    return re.fullmatch(_SEGMENT, char) is not None


def _common(x: str | None, y: str | None) -> str | None:
    """A character both steps accept (None: a placeholder's any segment character), or None when none is."""
    if x is not None and y is not None:
        return x if x == y else None
    one = x if x is not None else y
    if one is None:
        return "x"
    return one if _segment_char(one) else None


def overlap(first: str, second: str) -> str | None:
    """A key both patterns match, or None when no key can (a walk of the two patterns side by side)."""
    a, b = _steps(first), _steps(second)
    came: dict[tuple[int, int], tuple[tuple[int, int], str] | None] = {(0, 0): None}
    todo = [(0, 0)]
    while todo:
        state = todo.pop(0)
        if state == (len(a), len(b)):
            chars: list[str] = []
            back = came[state]
            while back is not None:
                state, char = back
                chars.append(char)
                back = came[state]
            return "".join(reversed(chars))
        for x, i in _moves(a, state[0]):
            for y, j in _moves(b, state[1]):
                step = _common(x, y)
                if step is not None and (i, j) not in came:
                    came[(i, j)] = (state, step)
                    todo.append((i, j))
    return None


class KeyspaceRegistry:
    """All keyspaces of a configuration; finds the keyspace of a key (the first whose pattern matches)."""

    def __init__(self, keyspaces: list[Keyspace]) -> None:
        self._keyspaces = {ks.name: ks for ks in keyspaces}
        self._ordered = list(keyspaces)

    def __iter__(self) -> Iterator[Keyspace]:
        return iter(self._ordered)

    def __len__(self) -> int:
        return len(self._ordered)

    def __getitem__(self, name: str) -> Keyspace:
        return self._keyspaces[name]

    def names(self) -> list[str]:
        return [ks.name for ks in self._ordered]

    def find(self, key: str) -> tuple[Keyspace, dict[str, str]] | None:
        """The keyspace and parameters of a key, or None. Not memoised (a regex match per keyspace, ~1 us): the
        hot paths go through plans.Planner, whose bounded memo holds what this finds."""
        check_key(key)
        for ks in self._ordered:
            params = ks.match(key)
            if params is not None:
                return ks, params
        return None

    def resolve(self, key: str) -> tuple[Keyspace, dict[str, str]]:
        found = self.find(key)
        if found is None:
            raise UnknownKeyspace(f"no keyspace pattern matches key {key[:200]!r}")
        return found

    @classmethod
    def from_mapping(cls, tables: Mapping[str, Any]) -> KeyspaceRegistry:
        keyspaces = []
        for name, table in tables.items():
            where = f"keyspaces.{name}"
            if not _NAME.match(name):
                raise ConfigError(f"{where}: keyspace name must be letters, digits, '_', '-' or '.'")
            if not isinstance(table, Mapping):
                raise ConfigError(f"{where}: must be a table")
            try:
                config = KeyspaceConfig.model_validate(dict(table))
            except ValidationError as exc:
                raise ConfigError(one_line(exc, functools.partial(_field_name, where))) from None
            keyspaces.append(Keyspace(name, config, _compile(config.pattern), config.tags))
        for n, one in enumerate(keyspaces):  # a key in two keyspaces would silently belong to the first
            for other in keyspaces[n + 1:]:
                example = overlap(one.config.pattern, other.config.pattern)
                if example is not None:
                    raise ConfigError(
                        f"keyspaces.{one.name}.pattern {one.config.pattern!r} and keyspaces.{other.name}.pattern "
                        f"{other.config.pattern!r} overlap: both match {example!r}; make them differ by a literal "
                        f"part (a placeholder matches one segment, no ':')")
        registry = cls(keyspaces)
        # Sources are built once here so that an unreachable import path is a configuration error.
        for ks in registry:
            try:
                build_source(ks)
            except ConfigError as exc:
                raise ConfigError(f"keyspaces.{ks.name}.source: {exc}") from None
        return registry


def _field_name(table: str, loc: str) -> str:
    return f"{table}.{loc}" if loc else table


def load_keyspaces(path: Path | str, *, required: bool = False) -> KeyspaceRegistry:
    """Keyspaces from a TOML file; a missing file is an empty registry unless ``required``."""
    path = Path(path)
    if not path.exists():
        if required:
            raise ConfigError(f"CACHEWARM_CONFIG: {path} does not exist")
        return KeyspaceRegistry([])
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"CACHEWARM_CONFIG: {path} is not valid TOML: {exc}") from None
    except OSError as exc:  # a directory, no permission, ...
        raise ConfigError(f"CACHEWARM_CONFIG: cannot read {path}: {exc.strerror or exc}") from None
    unknown = set(data) - {"keyspaces"}
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown top-level table (only [keyspaces.NAME] is read)")
    tables = data.get("keyspaces", {})
    if not isinstance(tables, dict):
        raise ConfigError("keyspaces: must be a table of tables")
    return KeyspaceRegistry.from_mapping(tables)


_BAD_KEY_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_key(key: object) -> str:
    """Refuses keys that cannot be cache keys: not text, empty, too long, or with control characters."""
    if not isinstance(key, str):
        raise InvalidKey(f"a key must be a str, not {type(key).__name__}")
    if not key:
        raise InvalidKey("a key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"a key must be at most {MAX_KEY_LENGTH} characters (got {len(key)})")
    if _BAD_KEY_CHARS.search(key):
        raise InvalidKey(f"key {key[:100]!r} contains control characters")
    if not key.isascii() and _SURROGATE.search(key):
        # A lone surrogate (e.g. from os.fsdecode or a bad JSON escape) cannot be sent to Redis as UTF-8.
        raise InvalidKey(f"key {key[:100]!r} is not valid Unicode (lone surrogate)")
    return key
