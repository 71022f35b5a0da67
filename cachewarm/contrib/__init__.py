"""Integrations with the frameworks writers already use: `cachewarm.contrib.sqlalchemy` (extra
``cachewarm[sqlalchemy]``) and `cachewarm.contrib.django` (extra ``cachewarm[django]``). Importing this package
imports neither framework.

The core below (configuration, read path, warming, invalidation, ...) never imports this package: an integration
registers what the core must call into it (`config.sources.add_import_hook`), and cachewarm's own processes (the
worker, its sidecar and consumer processes, the CLI) load those registrations at start.
"""

from __future__ import annotations


def load_startup_hooks() -> None:
    """Registers the hooks an integration needs in every cachewarm process, whether or not the process imports the
    integration otherwise: Django's set-up before ``python:`` sources are imported (django/startup.py). Imports
    no framework; idempotent."""
    from .django import startup

    del startup  # imported for its registration
