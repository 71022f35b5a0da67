"""Django set up in any cachewarm process before its keyspaces' ``python:`` sources are imported.

Importing this module adds `setup_django` to the hooks that `config.sources.import_callable` calls before it
imports a ``python:`` source's module; every cachewarm process imports it at start
(`config.sources.load_startup_hooks`, via pyproject.toml:
Celery's worker and its children, the sidecar, which refreshes hot keys
itself, and its invalidation consumer, ``cachewarm run``, ``warm``, ``check-config``) and builds its keyspaces'
sources then (`Settings.load_keyspaces()`). So a source module may import models and use the ORM with nothing
more than ``DJANGO_SETTINGS_MODULE`` in the environment, the variable Django's own tools read. (Celery's Django
fixup sets Django up in a worker's main process too, when it sees that variable; this is the same call, made
once.) An application's own process sets Django up itself, as any Django project does.

Nothing here imports Django unless that variable is set; of cachewarm it imports only the hook registry.
"""

from __future__ import annotations

import os

from ...config.sources import add_import_hook
from ...errors import ConfigError

SETTINGS_ENV = "DJANGO_SETTINGS_MODULE"


def setup_django() -> bool:
    """``django.setup()`` when the environment names a Django settings module and Django is not set up yet
    (nor being set up: an app's ``ready()`` may read the keyspaces). True when it ran. A broken project is a
    ConfigError naming the variable, like any other bad setting."""
    module = os.environ.get(SETTINGS_ENV, "").strip()
    if not module:
        return False
    try:
        import django
        from django.apps import apps
    except ImportError:
        raise ConfigError(f"{SETTINGS_ENV}={module}: Django is not installed (pip install 'cachewarm[django]')")\
            from None
    if apps.ready or apps.loading:
        return False
    try:
        django.setup()
    except Exception as exc:  # ImportError of the settings module, ImproperlyConfigured, an app's error
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(f"{SETTINGS_ENV}={module}: django.setup() failed: {type(exc).__name__}: {detail}")\
            from None
    return True


add_import_hook(setup_django)
