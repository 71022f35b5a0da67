"""The keyspaces' sources (cachewarm.toml): plain ORM reads, called by readers on a miss and by the workers when
they refresh a hot key. Sync functions: cachewarm runs them in a thread, where Django's sync ORM belongs;
`orm_source` drops broken connections around each call, as a request would."""

from __future__ import annotations

from typing import Any

from cachewarm.contrib.django.sources import orm_source

from .models import Category, Product


@orm_source
def product(id: str) -> dict[str, Any] | None:
    found = Product.objects.filter(pk=int(id)).first() if id.isdigit() else None
    return found.as_dict() if found is not None else None


@orm_source
def product_by_slug(slug: str) -> dict[str, Any] | None:
    found = Product.objects.filter(slug=slug).first()
    return found.as_dict() if found is not None else None


@orm_source
def category(id: str) -> dict[str, Any] | None:
    found = Category.objects.filter(pk=int(id)).first() if id.isdigit() else None
    return found.as_dict() if found is not None else None
