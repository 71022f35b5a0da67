"""The example shop project: products in Django's ORM, read through cachewarm, invalidated on save."""
