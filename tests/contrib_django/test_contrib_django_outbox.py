"""Product saves write their invalidations to the outbox in the same transaction (examples/django_project)."""

from __future__ import annotations

import pytest
from django.db import transaction
from products.models import Category, Product

from cachewarm.contrib.django.models import OutboxEntry

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


def rows() -> list[tuple[str | None, str | None, int | None]]:
    return list(OutboxEntry.objects.order_by("id").values_list("key", "tag", "version"))


def test_a_save_writes_its_rows_in_its_transaction() -> None:
    category = Category.objects.create(name="Tools")
    with transaction.atomic():
        product = Product.objects.create(name="Hammer", slug="hammer", price="9.90", category=category)
        assert rows() == [(f"product:{product.pk}", None, 1), ("product:slug:hammer", None, 1),
                          (f"category:{category.pk}", None, None)]
    assert len(rows()) == 3


def test_a_rolled_back_save_leaves_no_row() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        Product.objects.create(name="Saw", slug="saw", price="19.00")
        raise RuntimeError("the request failed")
    assert rows() == []
    assert not Product.objects.exists()


def test_a_changed_slug_invalidates_the_old_key_too() -> None:
    with transaction.atomic():
        product = Product.objects.create(name="Drill", slug="drill", price="50")
    OutboxEntry.objects.all().delete()
    product = Product.objects.get(pk=product.pk)
    with transaction.atomic():
        product.slug = "power-drill"
        product.save()
    assert rows() == [(f"product:{product.pk}", None, 2), ("product:slug:power-drill", None, 2),
                      ("product:slug:drill", None, 2)]


def test_a_delete_writes_rows() -> None:
    product = Product.objects.create(name="Nail", slug="nail", price="0.10")
    OutboxEntry.objects.all().delete()
    pk = product.pk
    with transaction.atomic():
        product.delete()
    assert rows() == [(f"product:{pk}", None, 1), ("product:slug:nail", None, 1)]
