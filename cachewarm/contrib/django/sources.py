"""`orm_source`: a keyspace source function that uses Django's ORM, kept healthy outside a request cycle.

A worker calls sources in its own threads, where nothing ends a request: a connection the database closed (a
restart, ``CONN_MAX_AGE``) would stay broken in that thread. Django drops such connections at each request's start
and end (``close_old_connections``); this does the same before and after each call, except inside a transaction
(a reader in a view with ``ATOMIC_REQUESTS``: its connection belongs to the request).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import close_old_connections, connection

P = ParamSpec("P")
R = TypeVar("R")


def _tidy() -> None:
    if not connection.in_atomic_block:
        close_old_connections()


def orm_source(function: Callable[P, R]) -> Callable[P, R]:
    """Wraps a sync source function (see the module's docstring)."""

    @functools.wraps(function)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        _tidy()
        try:
            return function(*args, **kwargs)
        finally:
            _tidy()

    return call
