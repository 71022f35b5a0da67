"""The project's Celery app, with cachewarm installed into it:

    celery -A shop worker -Q cachewarm.refresh,cachewarm.scan --prefetch-multiplier 1   # cachewarm's workers
    celery -A shop beat

Celery sets Django up in the worker (its Django fixup, DJANGO_SETTINGS_MODULE), and so does cachewarm in the
sidecar and any other process, so the keyspaces' ORM sources work everywhere.
"""

from __future__ import annotations

import os

from celery import Celery

from cachewarm.contrib.django.conf import cachewarm_settings
from cachewarm.worker.install import install

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

app = Celery("shop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
install(app, cachewarm_settings())  # CACHEWARM from Django's settings, the rest from the environment
