"""Where values come from: an HTTP API or a Python callable.

A source turns a key's parameters into a value, ``None`` for "no such item", or a SourceError. HTTP sources
percent-encode every parameter as one path segment, so a key can never change the host or climb the path
(``product:../../admin`` asks for ``/products/..%2F..%2Fadmin``). Callers own the HTTP clients and pass them in:
the read path a plain pooled httpx client, the workers an `HttpPool` (aiohttp's connection pool called directly:
httpx over aiohttp's transport cost about a third of a refresh's CPU, issue 12). Both give the same answers:
the same URL, no redirects followed, the same timeout per request, the same SourceError kinds.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit

import httpx
from yarl import URL

from ..errors import BadSourceResponse, ConfigError, InvalidKey, SourceError
from ..outcomes import SourceOutcome

if TYPE_CHECKING:
    import aiohttp


class SourceConfig(Protocol):
    """What a source is built from: the fields of a keyspace's table that describe it (keyspaces.KeyspaceConfig).
    A protocol, so that this module does not import keyspaces.py (which imports it)."""

    @property
    def source(self) -> str: ...

    @property
    def timeout(self) -> float | None: ...

    @property
    def version_field(self) -> str | None: ...


class SourceOwner(Protocol):
    """A named keyspace (keyspaces.Keyspace)."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> SourceConfig: ...


@dataclass(frozen=True, slots=True)
class Fetched:
    """What a source gave: the value (None for "no such item") and its version when the keyspace names one."""

    value: Any
    version: int | None = None
    # The source's body as it came when it can be stored as it is (UTF-8 JSON, the value parsed from it): the
    # refresh writes these bytes instead of encoding the value again (issue 29: one parse per key, no dump).
    raw: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def found(self) -> bool:
        return self.value is not None


def _segment(value: str) -> str:
    if value.strip(".") == "":
        raise InvalidKey(f"parameter {value!r} cannot be a path segment")
    return quote(value, safe="")


class HttpPool:
    """The workers' HTTP client for sources: one aiohttp connection pool of `max_connections`, called directly.

    The session is made on first use, on the loop that uses it (aiohttp's requirement); `aclose` closes it. A
    request follows no redirect (as httpx's default) and its timeout bounds the connection (pool wait included)
    and each read, as httpx's does. aiohttp is imported on first use (the read path's processes never need it)."""

    def __init__(self, *, max_connections: int) -> None:
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        # keepalive_timeout as httpx's pool (5 s); no cookie jar: a source is an API, each request stands alone
        connector = aiohttp.TCPConnector(limit=self.max_connections, keepalive_timeout=5.0)
        self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def get(self, url: str | URL, timeout: float) -> tuple[int, bytes]:
        """GET url: the status and the whole body; transport failures as SourceErrors (timeout, connect)."""
        import aiohttp

        session = self._session or self._open()
        limits = self._timeouts.get(timeout)
        if limits is None:
            limits = self._timeouts[timeout] = aiohttp.ClientTimeout(total=None, connect=timeout,
                                                                     sock_read=timeout)
        try:
            async with session.get(url, allow_redirects=False, timeout=limits) as response:
                return response.status, await response.read()
        except TimeoutError:
            raise SourceError("source timed out", kind=SourceOutcome.TIMEOUT) from None
        except aiohttp.ClientError as exc:
            raise SourceError(f"source unreachable: {type(exc).__name__}", kind=SourceOutcome.CONNECT) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


SourceClient = httpx.AsyncClient | HttpPool


class HttpSource:
    """GET on a URL template; JSON bodies; 404 is "no such item"."""

    def __init__(self, keyspace: str, template: str, *, timeout: float, version_field: str | None) -> None:
        self.keyspace = keyspace
        self.template = template
        self.timeout = timeout
        self.version_field = version_field
        bare = template.replace("{", "").replace("}", "")
        parts = urlsplit(bare)
        if not parts.hostname:
            raise ConfigError(f"{template!r} has no host")
        if "{" in template.split("//", 1)[1].split("/", 1)[0]:
            raise ConfigError(f"{template!r}: placeholders may not stand in the host")
        # The parameters are percent-encoded by url_for; a template that needs no quoting of its own then makes
        # a URL aiohttp can take as it is (no second parse to re-quote it: per request, that parse cost more
        # than the request's own header building).
        try:
            self._encoded = str(URL(bare)) == bare
        except ValueError:
            self._encoded = False

    def url_for(self, params: Mapping[str, str]) -> str:
        return self.template.format_map({k: _segment(v) for k, v in params.items()})

    def parse(self, response: httpx.Response) -> Fetched:
        return self._parsed(response.status_code, response.content)

    def _parsed(self, status: int, content: bytes) -> Fetched:
        if status == 404:
            return Fetched(None)
        if status >= 500:
            raise SourceError(f"source answered {status}", kind=SourceOutcome.HTTP_5XX)
        if status != 200:
            raise SourceError(f"source answered {status}", kind=SourceOutcome.HTTP_STATUS)
        try:
            value = json.loads(content, parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError):
            raise BadSourceResponse(f"source answered 200 with a body that is not JSON "
                                    f"({len(content)} bytes)") from None
        return _with_version(value, self.version_field, content if _storable(content) else None)

    def fetch_sync(self, params: Mapping[str, str], client: httpx.Client) -> Fetched:
        with _http_errors():
            response = client.get(self.url_for(params), timeout=self.timeout)
        return self.parse(response)

    async def fetch(self, params: Mapping[str, str], client: SourceClient) -> Fetched:
        if isinstance(client, HttpPool):
            url = self.url_for(params)
            return self._parsed(*await client.get(URL(url, encoded=True) if self._encoded else url, self.timeout))
        with _http_errors():
            response = await client.get(self.url_for(params), timeout=self.timeout)
        return self.parse(response)


@contextmanager
def _http_errors() -> Iterator[None]:
    """httpx's transport errors as SourceErrors, translated at this boundary."""
    try:
        yield
    except httpx.TimeoutException:
        raise SourceError("source timed out", kind=SourceOutcome.TIMEOUT) from None
    except httpx.HTTPError as exc:
        raise SourceError(f"source unreachable: {type(exc).__name__}", kind=SourceOutcome.CONNECT) from None


@contextmanager
def _function_errors() -> Iterator[None]:
    """What a source function raises, as SourceErrors (its own SourceErrors pass through)."""
    try:
        yield
    except SourceError:
        raise
    except TimeoutError:
        raise SourceError("source timed out", kind=SourceOutcome.TIMEOUT) from None
    except Exception as exc:
        raise SourceError(f"source function raised {type(exc).__name__}: {exc}", kind=SourceOutcome.EXCEPTION) from exc


class PythonSource:
    """A function ``pkg.module:function`` called with the key's parameters; sync or async; None is "no item"."""

    def __init__(self, keyspace: str, path: str, *, timeout: float, version_field: str | None) -> None:
        self.keyspace = keyspace
        self.timeout = timeout
        self.version_field = version_field
        self.function = import_callable(path)
        self.is_async = inspect.iscoroutinefunction(self.function)

    def fetch_sync(self, params: Mapping[str, str], client: object = None) -> Fetched:
        """A sync function is called directly; an async one runs on this thread's own event loop (made once per
        thread: building one per call cost ~0.37 ms)."""
        with _function_errors():
            if self.is_async:
                value = _thread_loop().run_until_complete(asyncio.wait_for(self.function(**params), self.timeout))
            else:
                value = self.function(**params)
        return _with_version(value, self.version_field)

    async def fetch(self, params: Mapping[str, str], client: object = None) -> Fetched:
        with _function_errors():
            if self.is_async:
                value = await asyncio.wait_for(self.function(**params), self.timeout)
            else:
                value = await asyncio.to_thread(self.function, **params)
        return _with_version(value, self.version_field)


Source = HttpSource | PythonSource


class _ThreadLoop:
    """One thread's event loop for sync calls of async source functions, held in a thread-local: when the thread
    ends, its locals go, and the loop is closed with them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def __del__(self) -> None:
        self.loop.close()


_local = threading.local()


def _thread_loop() -> asyncio.AbstractEventLoop:
    owned: _ThreadLoop | None = getattr(_local, "owned", None)
    if owned is None:
        owned = _local.owned = _ThreadLoop()
    return owned.loop


def _no_constant(name: str) -> Any:
    """JSON has no NaN or Infinity (Python's parser takes them; the value could not be stored: envelope.dumps)."""
    raise ValueError(f"{name} is not JSON")


# CWBENCH_RAW_JSON=off: every value encoded again from the parsed value (a bench's A/B switch; not a setting)
_KEEP_BODY = os.environ.get("CWBENCH_RAW_JSON", "on").strip().lower() not in ("off", "0", "no", "false")


def _storable(content: bytes) -> bool:
    """Whether a body json.loads took can be stored as it is: UTF-8 (json.loads also takes UTF-16 and -32, told
    by NULs in the first bytes, and a byte order mark) and on one line (an indented body is encoded compactly:
    every read of the value would parse its whitespace again); a body json.loads took is otherwise valid JSON."""
    return (_KEEP_BODY and not content.startswith(b"\xef\xbb\xbf") and b"\x00" not in content[:4]
            and b"\n" not in content)


def _with_version(value: Any, version_field: str | None, raw: bytes | None = None) -> Fetched:
    if version_field is None or value is None:
        return Fetched(value, None, raw if value is not None else None)
    version = value.get(version_field) if isinstance(value, dict) else None
    if version is None:
        return Fetched(value, None, raw)
    if isinstance(version, bool) or not isinstance(version, int):
        raise BadSourceResponse(f"version field {version_field!r} is not an integer")
    return Fetched(value, version, raw)


# Called, in the order added, before a ``python:`` source's module is imported: what such a module needs first.
# Integrations add theirs (cachewarm.contrib.django: django.setup() when DJANGO_SETTINGS_MODULE is set, so that a
# source module may import models), declared as entry points of the group below (pyproject.toml) so that the core
# never imports them; cachewarm's processes load them at start (load_startup_hooks).
_import_hooks: list[Callable[[], object]] = []
STARTUP_HOOKS_GROUP = "cachewarm.startup_hooks"


def load_startup_hooks() -> None:
    """Registers every import hook installed packages declare (entry points of STARTUP_HOOKS_GROUP). Imports no
    framework (a hook imports its own when called); idempotent."""
    from importlib.metadata import entry_points

    for entry in entry_points(group=STARTUP_HOOKS_GROUP):
        add_import_hook(entry.load())


def add_import_hook(hook: Callable[[], object]) -> None:
    """Calls `hook` before each import of a ``python:`` source's module (added once however often it is added; a
    hook returns at once when it has nothing left to do). A ConfigError it raises is the source's."""
    if hook not in _import_hooks:
        _import_hooks.append(hook)


def import_callable(path: str) -> Callable[..., Any]:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{path!r} must look like 'package.module:function'")
    for hook in _import_hooks:
        hook()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {module_name!r}: {exc}") from None
    except Exception as exc:  # the module itself is broken (SyntaxError, an error at import time): still one line
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(f"importing module {module_name!r} failed: {type(exc).__name__}: {detail}") from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r}")
    if not callable(target):
        raise ConfigError(f"{path!r} is not callable")
    return target  # type: ignore[no-any-return]


_built: dict[tuple[str, str, float, str | None], Source] = {}


def build_source(keyspace: SourceOwner, *, default_timeout: float = 5.0) -> Source:
    """The source of a keyspace, built once per process."""
    cfg = keyspace.config
    # The timeout and version field are part of the identity: the configuration check builds every source with
    # the default timeout first, and a client's CACHEWARM_SOURCE_TIMEOUT must not be shadowed by that build.
    timeout = cfg.timeout or default_timeout
    cache_key = (keyspace.name, cfg.source, timeout, cfg.version_field)
    source = _built.get(cache_key)
    if source is not None:
        return source
    if cfg.source.startswith("python:"):
        source = PythonSource(keyspace.name, cfg.source.removeprefix("python:"), timeout=timeout,
                              version_field=cfg.version_field)
    else:
        source = HttpSource(keyspace.name, cfg.source, timeout=timeout, version_field=cfg.version_field)
    _built[cache_key] = source
    return source
