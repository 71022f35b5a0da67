"""``python manage.py cachewarm ARGS``: the `cachewarm` command (run, relay, warm, invalidate, status,
check-config) with the project's ``CACHEWARM`` setting.

The dict's entries are put into this process's environment as ``CACHEWARM_*`` (the dict wins, as everywhere in
the Django integration), so the command and every process it starts (``run``'s worker, beat and sidecar) read
them, and ``DJANGO_SETTINGS_MODULE`` (set by manage.py) lets their ``python:`` sources use the ORM:
``python manage.py cachewarm run`` is a whole cachewarm node configured from Django's settings.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from cachewarm.contrib.django.conf import SETTING, settings_values


def export_settings() -> dict[str, str]:
    """The CACHEWARM dict as environment variables, set in this process; returns what was set."""
    exported = {f"CACHEWARM_{name.upper()}": str(value)
                for name, value in settings_values(getattr(settings, SETTING, None)).items()}
    os.environ.update(exported)
    return exported


class Command(BaseCommand):  # type: ignore[misc]
    help = "cachewarm's own command line (cachewarm --help), with the CACHEWARM setting applied."

    def run_from_argv(self, argv: list[str]) -> None:
        # cachewarm's options and --help are click's, not Django's: everything after the name goes through as is.
        from cachewarm.cli import cli
        from cachewarm.errors import CONFIG_ERROR, ConfigError

        try:
            export_settings()
        except ConfigError as exc:
            self.stderr.write(f"cachewarm: configuration error: {exc}")
            raise SystemExit(CONFIG_ERROR) from None
        cli.main(args=argv[2:], prog_name=f"{os.path.basename(argv[0])} cachewarm")

    def handle(self, *args: Any, **options: Any) -> None:  # call_command: the same, arguments as strings
        self.run_from_argv(["manage.py", "cachewarm", *map(str, args)])
