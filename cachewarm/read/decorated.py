"""The clients' `cached` decorator: which cache key a call of a decorated function gets, and what it clears."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from ..redis_layer import envelope


def check_function(fn: Callable[..., Any], *, coroutine: bool, client: str) -> str:
    """The metric label of a decorated function; ConfigError for a function the client cannot await or call
    (AsyncCache needs a coroutine function; Cache would cache a coroutine object)."""
    if inspect.iscoroutinefunction(fn) != coroutine:
        kind = "a coroutine function" if coroutine else "a plain (not async) function"
        raise ConfigError(f"{client}.cached needs {kind}, not {fn.__qualname__}")
    return f"fn:{fn.__qualname__}"


def function_key(fn: Callable[..., Any], template: str | None, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> str:
    """The key of one call: the template filled with the bound arguments, or a hash of them."""
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    if template is not None:
        return template.format(**bound.arguments)
    digest = hashlib.sha1(envelope.dumps([list(bound.args), bound.kwargs]).encode()).hexdigest()[:24]
    return f"{_function_prefix(fn)}{digest}"


def _function_prefix(fn: Callable[..., Any]) -> str:
    return f"fn:{fn.__module__}.{fn.__qualname__}:"


def clear_prefix(fn: Callable[..., Any], template: str | None) -> str:
    """What `cache_clear()` clears: every key of the function (its template's literal start, or its hash prefix)."""
    if template is None:
        return _function_prefix(fn)
    return template.split("{", 1)[0]
