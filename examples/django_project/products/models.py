"""Categories and products. Each save or delete invalidates the cached keys built from the row's fields:

- a product, through the outbox (its rows commit with the product: a writer that dies after its commit still
  gets its keys invalidated, by the relay); its version goes with its own keys, so an older copy never returns;
- a category, after commit (``transaction.on_commit`` + XADD: nothing for a rolled-back change).
"""

from __future__ import annotations

from typing import Any

from django.db import models

from cachewarm.contrib.django.invalidation import invalidate_on_change


@invalidate_on_change(keys=["category:{id}"], via="on_commit")
class Category(models.Model):
    name = models.CharField(max_length=200)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.pk, "name": self.name,
                "products": list(self.products.order_by("pk").values_list("pk", flat=True))}


@invalidate_on_change(
    keys={"product:{id}": "version", "product:slug:{slug}": "version", "category:{category_id}": None},
    via="outbox",
)
class Product(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200, unique=True)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    category = models.ForeignKey(Category, null=True, blank=True, related_name="products",
                                 on_delete=models.SET_NULL)
    version = models.BigIntegerField(default=1)

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            self.version += 1  # every change is a newer version of the cached value
        super().save(*args, **kwargs)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.pk, "name": self.name, "slug": self.slug, "price": str(self.price),
                "category": self.category_id, "version": self.version}
