"""The keyspaces' sources (cachewarm.toml): plain ORM reads, called by readers on a miss and by the workers when
they refresh a hot key. Sync functions: cachewarm runs them in a thread, where Django's sync ORM belongs."""

from __future__ import annotations

from typing import Any

from django.db import close_old_connections

from .models import Category, Product


def product(id: str) -> dict[str, Any] | None:
    close_old_connections()  # a worker has no request cycle to drop a connection the database closed
    found = Product.objects.filter(pk=int(id)).first() if id.isdigit() else None
    return found.as_dict() if found is not None else None


def product_by_slug(slug: str) -> dict[str, Any] | None:
    close_old_connections()
    found = Product.objects.filter(slug=slug).first()
    return found.as_dict() if found is not None else None


def category(id: str) -> dict[str, Any] | None:
    close_old_connections()
    found = Category.objects.filter(pk=int(id)).first() if id.isdigit() else None
    return found.as_dict() if found is not None else None
