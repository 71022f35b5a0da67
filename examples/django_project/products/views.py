"""``GET /products/<id>`` reads through cachewarm (the ``cachewarm`` cache: a miss runs products.sources.product);
``PUT`` changes the product in the request's transaction (``ATOMIC_REQUESTS``), and its outbox rows with it;
``/async/products/<id>`` is the same read in an async view (``aget``: cachewarm's asyncio client)."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

from django.core.cache import caches
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse

from .models import Product


def product_detail(request: HttpRequest, product_id: int) -> HttpResponse:
    if request.method == "PUT":
        return _update(request, product_id)
    value = caches["cachewarm"].get(f"product:{product_id}")
    if value is None:
        return JsonResponse({"detail": "no such product"}, status=404)
    return JsonResponse({"product": value})


@transaction.non_atomic_requests  # Django runs no async view inside ATOMIC_REQUESTS' transaction
async def product_detail_async(request: HttpRequest, product_id: int) -> HttpResponse:
    value = await caches["cachewarm"].aget(f"product:{product_id}")
    if value is None:
        return JsonResponse({"detail": "no such product"}, status=404)
    return JsonResponse({"product": value})


def _update(request: HttpRequest, product_id: int) -> HttpResponse:
    product = Product.objects.select_for_update().filter(pk=product_id).first()
    if product is None:
        return JsonResponse({"detail": "no such product"}, status=404)
    try:
        body = json.loads(request.body or b"{}")
        if "name" in body:
            product.name = str(body["name"])
        if "price" in body:
            product.price = Decimal(str(body["price"]))
    except (ValueError, InvalidOperation):
        return JsonResponse({"detail": "body must be JSON with name and/or price"}, status=400)
    product.save()
    return JsonResponse({"product": product.as_dict()})
