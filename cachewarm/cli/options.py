"""Shared CLI plumbing: settings from the environment and the keyspaces file, read before a command does anything,
and the one form in which a command reports that Redis failed.

A ConfigError raised here (or anywhere in a command) becomes one line and exit status 2 in one place: the
`cachewarm` group (cli/__init__.py); a Redis failure becomes one line naming the masked URL and exit status 1 there
too (`redis_failure`).
"""

from __future__ import annotations

from typing import NoReturn

import click

from ..errors import ConfigError
from ..redis_layer.urls import unavailable
from ..settings import Settings

REDIS_FAILURE = 1  # the exit status of a command Redis failed


def load_settings(*, require_config: bool = False, require_keyspaces: bool = False) -> Settings:
    """Settings and their (validated) keyspaces; raises ConfigError. `require_keyspaces`: a command that has
    nothing to do without a keyspace says so (no file, or a file with none) instead of printing nothing."""
    settings = Settings.load()
    if (require_config or require_keyspaces) and not settings.config.exists():
        raise ConfigError(f"CACHEWARM_CONFIG: {settings.config} does not exist")
    if not len(settings.load_keyspaces()) and require_keyspaces:
        raise ConfigError(f"CACHEWARM_CONFIG: {settings.config} defines no keyspace (add a [keyspaces.NAME] table)")
    return settings


def fail(line: str, status: int = 2) -> NoReturn:
    """One line on stderr and the exit status (2: what the user gave is wrong)."""
    click.echo(line, err=True)
    raise SystemExit(status)


def redis_failure(command: str, url: str, exc: BaseException) -> str:
    """``cachewarm COMMAND: redis unavailable at URL (Error: message)`` (urls.unavailable: masked, one line)."""
    return f"cachewarm {command}: {unavailable('redis', url, exc)}"
