"""The outbox table as a Django model: the same ``cachewarm_outbox`` every writer and the relay share
(cachewarm/outbox/schema.py). Rows are written by `invalidation` in the writer's transaction; the relay
(``cachewarm relay``, or the workers with ``CACHEWARM_OUTBOX_URL``) publishes and deletes them."""

from __future__ import annotations

from django.db import models

from ...outbox.schema import MAX_TARGET_LENGTH, TABLE


class OutboxEntry(models.Model):  # type: ignore[misc]
    """One pending invalidation: exactly one of `key` / `tag`; `version` for key events; `created_ms` becomes
    the event's ``ts``."""

    id = models.BigAutoField(primary_key=True)
    key = models.CharField(max_length=MAX_TARGET_LENGTH, null=True, blank=True)
    tag = models.CharField(max_length=MAX_TARGET_LENGTH, null=True, blank=True)
    version = models.BigIntegerField(null=True, blank=True)
    created_ms = models.BigIntegerField()

    class Meta:
        app_label = "cachewarm"
        db_table = TABLE
        verbose_name = "outbox entry"
        verbose_name_plural = "outbox entries"

    def __str__(self) -> str:
        target = f"key {self.key}" if self.key is not None else f"tag {self.tag}"
        return target + (f" v{self.version}" if self.version is not None else "")
