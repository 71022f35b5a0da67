"""Shared CLI plumbing: settings from the environment and the keyspaces file, read before a command does anything.

A ConfigError raised here (or anywhere in a command) becomes one line and exit status 2 in one place: the
`cachewarm` group (cli/__init__.py).
"""

from __future__ import annotations

from ..errors import ConfigError
from ..settings import Settings


def load_settings(*, require_config: bool = False) -> Settings:
    """Settings and their (validated) keyspaces; raises ConfigError."""
    settings = Settings.load()
    if require_config and not settings.config.exists():
        raise ConfigError(f"CACHEWARM_CONFIG: {settings.config} does not exist")
    settings.load_keyspaces()
    return settings
