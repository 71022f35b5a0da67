"""The `cachewarm` command. Each subcommand lives in its own module and is imported only when it runs."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from ..config.sources import load_startup_hooks
from ..errors import CONFIG_ERROR, CacheUnavailable, ConfigError

# name -> "module:attribute" (a click.Command), loaded on use so that `cachewarm --help` stays fast.
COMMANDS: dict[str, str] = {
    "check-config": "cachewarm.cli.check_config:check_config",
    "run": "cachewarm.cli.run:run",
    "demo": "cachewarm.cli.demo:demo",
    "warm": "cachewarm.cli.warm:warm",
    "invalidate": "cachewarm.cli.invalidate:invalidate",
    "relay": "cachewarm.cli.relay:relay",
    "status": "cachewarm.cli.status:status",
    "inspect": "cachewarm.cli.inspect:inspect",
    "pins": "cachewarm.cli.pins:pins",
    "unpin": "cachewarm.cli.pins:unpin",
    "audit": "cachewarm.cli.audit:audit",
    "simulate": "cachewarm.cli.simulate:simulate",
    "trace": "cachewarm.cli.trace:trace",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        # The one place a configuration error becomes one line and exit status 2 (CONFIG_ERROR), whichever command
        # raised it.
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"cachewarm: configuration error: {exc}", err=True)
            ctx.exit(CONFIG_ERROR)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            # ... and a Redis failure one line in one form: the command, the masked URL, the error.
            line = _redis_failure(ctx.invoked_subcommand or "", exc)
            if line is None:
                raise
            click.echo(line, err=True)
            ctx.exit(1)


def _redis_failure(command: str, exc: Exception) -> str | None:
    """The one line for a Redis error (imported here, not at the top: `cachewarm --help` loads no Redis client)."""
    from ..redis_layer.connections import REDIS_ERRORS
    from ..settings import Settings
    from .options import redis_failure

    if isinstance(exc, CacheUnavailable):  # raised `from None` over the Redis error, which says more
        cause = exc.__cause__ or exc.__context__
        exc = cause if isinstance(cause, REDIS_ERRORS) else exc
    elif not isinstance(exc, REDIS_ERRORS):
        return None
    try:
        url = Settings.load().redis_url  # the environment only: what the failed command was given
    except ConfigError:
        url = "(unknown)"
    return redis_failure(command, url, exc)


@click.group(cls=LazyGroup)
@click.version_option(package_name="cachewarm")
def cli() -> None:
    """Keeps the hot part of a Redis cache warm."""
    load_startup_hooks()  # before a command's keyspaces import any python: source (Django's set-up)


def main() -> None:
    cli(prog_name="cachewarm")


if __name__ == "__main__":
    main()
    sys.exit(0)
