"""What every cachewarm task needs from the app it runs in: the task names, and the settings the app was given.

The tasks are registered on an app by `cachewarm.tasks.register` (cachewarm's own app and a user's app alike), so
they find their settings on the app (``app.conf.cachewarm_settings``), never in a module-level app.
"""

from __future__ import annotations

from typing import Any

from ..settings import Settings

REFRESH = "cachewarm.refresh"
SCAN = "cachewarm.scan"
SETTINGS_KEY = "cachewarm_settings"


def settings_of(app: Any) -> Settings:
    """The settings `app` was installed with (loaded from the environment when it has none)."""
    settings = app.conf.get(SETTINGS_KEY)
    if not isinstance(settings, Settings):
        settings = Settings.load()
        app.conf[SETTINGS_KEY] = settings
    return settings
