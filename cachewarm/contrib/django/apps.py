"""The Django app: ``INSTALLED_APPS = [..., "cachewarm.contrib.django"]`` (label ``cachewarm``).

``manage.py check`` (and every ``runserver`` / ``migrate``) reports a wrong ``CACHEWARM`` setting or keyspace file
as ``cachewarm.E001``, with the same one line the cachewarm commands print."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.signals import setting_changed

from ...errors import ConfigError


def check_settings(app_configs: Any = None, **_: Any) -> list[checks.CheckMessage]:
    from .conf import cachewarm_settings

    try:
        cachewarm_settings().load_keyspaces()
    except ConfigError as exc:
        return [checks.Error(str(exc), hint="see the CACHEWARM setting and the keyspace file it names",
                             id="cachewarm.E001")]
    return []


class CachewarmConfig(AppConfig):  # type: ignore[misc]
    name = "cachewarm.contrib.django"
    label = "cachewarm"
    verbose_name = "cachewarm"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .conf import forget_settings

        def on_change(setting: str, **_: Any) -> None:
            if setting in ("CACHEWARM", "CACHES"):
                forget_settings()

        setting_changed.connect(on_change, weak=False, dispatch_uid="cachewarm.contrib.django.settings")
        checks.register(check_settings, "cachewarm")
