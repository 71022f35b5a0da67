"""The ``cachewarm_outbox`` table; on PostgreSQL also the statement trigger that NOTIFYs ``cachewarm_outbox``
after each insert (the relays LISTEN instead of polling). The DDL is cachewarm.outbox.schema's, shared with the
SQLAlchemy integration and the relay."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

from cachewarm.outbox.schema import MAX_TARGET_LENGTH, POSTGRES_NOTIFY_FUNCTION, POSTGRES_NOTIFY_TRIGGER, TABLE


def _on_postgresql(statements: tuple[str, ...]) -> Any:
    def run(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            for statement in statements:
                schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):  # type: ignore[misc]
    initial = True
    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="OutboxEntry",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("key", models.CharField(blank=True, max_length=MAX_TARGET_LENGTH, null=True)),
                ("tag", models.CharField(blank=True, max_length=MAX_TARGET_LENGTH, null=True)),
                ("version", models.BigIntegerField(blank=True, null=True)),
                ("created_ms", models.BigIntegerField()),
            ],
            options={
                "db_table": TABLE,
                "verbose_name": "outbox entry",
                "verbose_name_plural": "outbox entries",
            },
        ),
        migrations.RunPython(
            _on_postgresql((POSTGRES_NOTIFY_FUNCTION, POSTGRES_NOTIFY_TRIGGER)),
            _on_postgresql((f"DROP TRIGGER IF EXISTS {TABLE}_notify ON {TABLE}",
                            f"DROP FUNCTION IF EXISTS {TABLE}_notify()")),
            elidable=False,
        ),
    ]
