"""Process settings from the environment (prefix ``CACHEWARM_``), validated by pydantic-settings."""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .config.keyspaces import KeyspaceRegistry, load_keyspaces
from .errors import ConfigError, one_line
from .redis_layer import sentinel
from .redis_layer.urls import mask_url as mask_url  # where it was first; the Redis layer has it

log = logging.getLogger("cachewarm.settings")

ENV_PREFIX = "CACHEWARM_"
# CACHEWARM_ variables that are not settings: the worker's own (sidecar.py, heartbeat.py) and the repository's test
# and build tools'. Any other is most likely a misspelt setting, and is named with the closest one.
OTHER_VARIABLES = frozenset({"CACHEWARM_NODE_NAME", "CACHEWARM_INVALIDATION_CONSUMER", "CACHEWARM_TRY_RESOLUTION",
                             "CACHEWARM_DJANGO_SDIST", "CACHEWARM_TEST_CALLS", "CACHEWARM_TEST_DELAY",
                             "CACHEWARM_SOAK_TRACEMALLOC"})
_warned: set[str] = set()


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per CACHEWARM_ variable that is no setting, naming the closest setting (difflib) if any.

    A warning, not an error: a deployment may keep other variables under the prefix (its own scripts'), and a
    process that refused to start over one would be worse than one that says what it ignores."""
    known = [name.upper() for name in Settings.model_fields]
    lines = []
    for name in sorted(environ):
        upper = name.upper()
        rest = upper.removeprefix(ENV_PREFIX)
        if rest == upper or rest in known or upper in OTHER_VARIABLES:
            continue
        close = difflib.get_close_matches(rest, known, n=1, cutoff=0.6)
        hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else " (the settings: README.md, Configuration)"
        lines.append(f"cachewarm: warning: {name} is not a cachewarm setting{hint}; ignored")
    return lines


def warn_unknown_variables(environ: Mapping[str, str] | None = None) -> None:
    """Logs each unknown variable's line once per process (no logging set up: the line alone, on stderr)."""
    for line in unknown_variables(os.environ if environ is None else environ):
        if line not in _warned:
            _warned.add(line)
            log.warning(line)


# Schemes of the cache's URL, and of the broker's without asking kombu (any kombu transport is a broker).
CACHE_SCHEMES = ("redis", "rediss", "unix", sentinel.SCHEME)
BROKER_SCHEMES = ("redis", "rediss", "unix", "amqp", "amqps", "pyamqp", "sentinel")  # unix: accepted before


def _broker_scheme_known(scheme: str) -> bool:
    if scheme in BROKER_SCHEMES:
        return True
    from kombu.transport import TRANSPORT_ALIASES  # only for the rarer brokers: kombu is no reader's import

    return scheme.partition("+")[0] in TRANSPORT_ALIASES


def _default_broker(redis_url: str) -> str:
    if sentinel.is_sentinel_url(redis_url):
        return sentinel.broker_url_for(redis_url)[0]
    parts = urlsplit(redis_url)
    return urlunsplit((parts.scheme, parts.netloc, "/1", parts.query, parts.fragment))


class Settings(BaseSettings):
    """Everything a cachewarm process reads from its environment; keyspaces come from the TOML file."""

    model_config = SettingsConfigDict(env_prefix="CACHEWARM_", extra="ignore", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    # the cache is a Redis Cluster: redis_url names any of its nodes (connections.py)
    redis_cluster: bool = False
    broker_url: str = ""  # default: the cache's server, database 1
    # a sentinel:// broker's master (default: a Sentinel cache's master)
    broker_sentinel_master: str = Field("", validate_default=True)
    config: Path = Path("./cachewarm.toml")
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9808, ge=0, le=65535)
    key_prefix: str = "cachewarm:"

    # read path
    redis_timeout: float = Field(0.25, gt=0, description="socket timeout of the cache connection (read path)")
    redis_backoff: float = Field(1.0, ge=0, description="after a Redis failure, readers skip Redis this long")
    lease_ms: int = Field(5000, gt=0, description="how long a loader holds a key's lease before others may load")
    wait_timeout: float = Field(10.0, gt=0, description="how long a reader waits for another's load")
    negative_ttl: float = Field(5.0, ge=0, description="how long a 'no such item' (404) answer is cached")
    fence_ttl: int = Field(86400, gt=0, description="how long a key's invalidation fence is remembered (s)")
    source_timeout: float = Field(5.0, gt=0, description="timeout of one source request")
    stats_flush_interval: float = Field(0.25, gt=0, description="how often read counts are sent to Redis (s)")
    max_plans: int = Field(20_000, ge=2, description="per-key plans memoised per client and worker process, least "
                           "recently used dropped first (~240 B each with the key: ~4.6 MiB at 20,000)")

    # near cache (local = true keyspaces): how a process knows its tracking link is alive. A ping every
    # near_ping_interval s (driven by reads) must be answered within near_lag_limit s, or every local copy is
    # dropped until it is: if the link goes silent (a partition), a copy is served at most this long after
    near_ping_interval: float = Field(0.1, gt=0, description="seconds between pings on the tracking link")
    near_lag_limit: float = Field(0.25, gt=0, description="a ping unanswered this long: local copies dropped")

    # warming
    scan_interval: float = Field(1.0, gt=0, description="seconds between beat scans")
    hot_half_life: float = Field(60.0, gt=0, description="half-life (s) of a read's weight in popularity")
    # 0.9, not 1: one read keeps a key hot for 0.15 half-lives (9 s at 60 s), long enough for a short TTL's value
    # filled by that read to be refreshed before its second read misses (issue 12: learning misses per newly hot
    # key 1.57 -> 1.21 in bench/hit_ratio.py, source requests per read unchanged); a value with a TTL longer than
    # that is not due in those seconds, so it costs nothing there.
    hot_threshold: float = Field(0.9, gt=0, description="decayed reads above which a key counts as hot")
    max_tracked_keys: int = Field(100_000, gt=0, description="tracked keys per keyspace; coldest evicted")
    refresh_batch_size: int = Field(500, gt=0, description="keys per refresh task")
    refresh_concurrency: int = Field(100, gt=0, description="source requests in flight per keyspace per worker")
    refresh_rate: float = Field(0.0, ge=0, description="source requests/s per keyspace, all workers (0: none)")
    refresh_retries: int = Field(3, ge=0)

    # Celery queues: cachewarm's tasks go to these and a cachewarm worker consumes only these (a broker shared
    # with other apps keeps their tasks and cachewarm's apart)
    refresh_queue: str = Field("cachewarm.refresh", min_length=1, description="broker queue of refresh tasks")
    scan_queue: str = Field("cachewarm.scan", min_length=1, description="broker queue of the scan task")

    # invalidation
    stream_maxlen: int = Field(1_000_000, gt=0, description="approximate MAXLEN of the invalidation stream")
    claim_idle_ms: int = Field(30_000, gt=0, description="pending entries idle this long are claimed (XAUTOCLAIM)")
    max_deliveries: int = Field(5, gt=0, description="an entry delivered more often goes to the dead stream")

    # transactional outbox (cachewarm/outbox): the relay runs in the sidecar when outbox_url is set
    outbox_url: str = Field("", description="database holding cachewarm_outbox (postgresql://..., sqlite:///...)")
    outbox_poll_interval: float = Field(0.1, gt=0, description="seconds between polls of an SQLite outbox")
    outbox_batch_size: int = Field(500, gt=0, le=10_000, description="outbox rows per relay batch")

    _keyspaces: KeyspaceRegistry | None = PrivateAttr(None)

    @field_validator("key_prefix")
    @classmethod
    def _prefix_shape(cls, value: str) -> str:
        if not value or not value.endswith(":"):
            raise ValueError("must be non-empty and end with ':'")
        if "{" in value or "}" in value:
            raise ValueError("must not contain '{' or '}' (they would move the keys' Redis Cluster hash tags)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in CACHE_SCHEMES:
            raise ValueError("must be a redis://, rediss://, unix:// or redis+sentinel:// URL")
        if sentinel.is_sentinel_url(value):
            sentinel.parse(value)  # a ValueError names what is wrong
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str) -> str:
        if value and not _broker_scheme_known(urlsplit(value).scheme):
            raise ValueError("must be a Celery broker URL (redis://, rediss://, amqp://, sentinel://, ...)")
        return value

    @field_validator("broker_sentinel_master")
    @classmethod
    def _sentinel_master(cls, value: str, info: ValidationInfo) -> str:
        cache = info.data.get("redis_url", "")
        if not value and sentinel.is_sentinel_url(cache):
            return sentinel.parse(cache).master
        if not value and urlsplit(info.data.get("broker_url", "")).scheme == "sentinel":
            raise ValueError("needed by a sentinel:// broker (the name of its master)")
        return value

    @field_validator("outbox_url")
    @classmethod
    def _outbox_scheme(cls, value: str) -> str:
        base = value.partition("://")[0].split("+", 1)[0].lower()
        if value and base not in ("postgresql", "postgres", "sqlite"):
            raise ValueError("must be a postgresql://... or sqlite:///path URL")
        return value

    @model_validator(mode="after")
    def _broker_default(self) -> Settings:
        if not self.broker_url:
            object.__setattr__(self, "broker_url", _default_broker(self.redis_url))
        return self

    @classmethod
    def load(cls, **overrides: object) -> Settings:
        """Settings from the environment, with every error turned into one ConfigError line. Cheap: reads the
        environment only (the keyspaces file is read by `load_keyspaces`)."""
        warn_unknown_variables()
        try:
            return cls(**overrides)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise ConfigError(one_line(exc, lambda where: "CACHEWARM_" + (where or "settings").upper(),
                                       count_more=True)) from None

    def load_keyspaces(self) -> KeyspaceRegistry:
        """The keyspaces of the file `config` names. The first call reads it: parses the TOML and imports the
        modules of ``python:`` sources (a ConfigError when anything is wrong); later calls return that registry.
        Processes call it at start-up, so that a wrong file stops them before they serve."""
        if self._keyspaces is None:
            self._keyspaces = load_keyspaces(self.config)
        return self._keyspaces

    @property
    def keyspaces(self) -> KeyspaceRegistry:
        """`load_keyspaces()`, as an attribute: the first access reads the file (see there)."""
        return self.load_keyspaces()
