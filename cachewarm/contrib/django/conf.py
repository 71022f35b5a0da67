"""cachewarm's `Settings` in a Django project: the ``CACHEWARM`` dict of Django's settings, then the environment.

    CACHEWARM = {"REDIS_URL": "redis://cache:6379/0", "CONFIG": BASE_DIR / "cachewarm.toml"}

Names are the environment variables' without the ``CACHEWARM_`` prefix (any case). A name the dict gives wins over
the environment (the dict is what the project wrote down; read ``os.environ`` there to let the environment
decide); the rest comes from ``CACHEWARM_*`` as everywhere else. Built once per process, again after a change of
the setting (``override_settings`` in tests).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from ...errors import ConfigError
from ...settings import Settings

SETTING = "CACHEWARM"

_lock = threading.Lock()
_loaded: Settings | None = None


def settings_values(raw: object, where: str = SETTING) -> dict[str, Any]:
    """The dict's entries as `Settings` fields (lower case); an unknown name is a ConfigError naming it."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a dict of cachewarm settings, not {type(raw).__name__}")
    values = {}
    for name, value in raw.items():
        field = str(name).lower()
        if field not in Settings.model_fields:
            raise ConfigError(f"{where}[{name!r}]: unknown cachewarm setting")
        values[field] = value
    return values


def cachewarm_settings(**overrides: Any) -> Settings:
    """The project's cachewarm settings (see the module's docstring); `overrides` win over both sources and are
    not remembered. A bad value is a ConfigError naming it."""
    global _loaded
    if overrides:
        return _build(overrides)
    loaded = _loaded
    if loaded is not None:  # the read path's: no lock
        return loaded
    with _lock:
        if _loaded is None:
            _loaded = _build({})
        return _loaded


def _build(overrides: Mapping[str, Any]) -> Settings:
    from django.conf import settings

    values = settings_values(getattr(settings, SETTING, None))
    values.update(overrides)
    return Settings.load(**values)


def forget_settings() -> None:
    """The next `cachewarm_settings()` reads Django's settings again (connected to ``setting_changed``)."""
    global _loaded
    with _lock:
        _loaded = None


_derived: dict[tuple[Settings, tuple[tuple[str, Any], ...]], Settings] = {}


def settings_for(base: Settings, overrides: tuple[tuple[str, Any], ...]) -> Settings:
    """`base` with a backend's OPTIONS/LOCATION applied, built once (its keyspaces file read once)."""
    if not overrides:
        return base
    settings = _derived.get((base, overrides))
    if settings is None:
        settings = _derived[(base, overrides)] = cachewarm_settings(**dict(overrides))
    return settings
