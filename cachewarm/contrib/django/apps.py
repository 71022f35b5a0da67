"""The Django app: ``INSTALLED_APPS = [..., "cachewarm.contrib.django"]`` (label ``cachewarm``)."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed


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
