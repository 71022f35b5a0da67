"""Integrations with the frameworks writers already use: `cachewarm.contrib.sqlalchemy` (extra
``cachewarm[sqlalchemy]``) and `cachewarm.contrib.django` (extra ``cachewarm[django]``). Importing this package
imports neither framework.

The core below (configuration, read path, warming, invalidation, ...) never imports this package: an integration
declares what the core must call into it as an entry point (group ``cachewarm.startup_hooks`` in pyproject.toml),
and cachewarm's own processes (the worker, its sidecar and consumer processes, the CLI) load those at start
(`config.sources.load_startup_hooks`).
"""

from __future__ import annotations
