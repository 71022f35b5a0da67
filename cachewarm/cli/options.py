"""Shared CLI plumbing: settings from the environment, with configuration errors as one line and exit 2."""

from __future__ import annotations

import click

from ..errors import ConfigError
from ..settings import Settings


def load_settings(*, require_config: bool = False) -> Settings:
    """Settings and (validated) keyspaces, or a one-line error and exit status 2."""
    try:
        settings = Settings.load()
        if require_config and not settings.config.exists():
            raise ConfigError(f"CACHEWARM_CONFIG: {settings.config} does not exist")
        _ = settings.keyspaces
    except ConfigError as exc:
        click.echo(f"cachewarm: configuration error: {exc}", err=True)
        raise SystemExit(2) from None
    return settings
