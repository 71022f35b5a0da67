"""Django integration (extra ``cachewarm[django]``): add ``"cachewarm.contrib.django"`` to ``INSTALLED_APPS``.

- `models.OutboxEntry`: the shared ``cachewarm_outbox`` table, with its migration (on PostgreSQL, the NOTIFY
  trigger that wakes the relays);
- `invalidation.invalidate_on_change`: keys and tags from a model's fields, invalidated after ``post_save`` /
  ``post_delete`` through the outbox (same transaction) or ``transaction.on_commit`` + XADD;
- `cache.CachewarmCache`: a ``CACHES`` backend reading keyspace keys through cachewarm, other keys as Django's
  own Redis cache would;
- `conf.cachewarm_settings`: cachewarm's `Settings` from the ``CACHEWARM`` dict of Django's settings and the
  environment; `startup.setup_django`: Django set up in any cachewarm process (workers, sidecar, CLI) whose
  environment names ``DJANGO_SETTINGS_MODULE``, before ``python:`` sources are imported.

Importing this package imports nothing of Django's; cachewarm's processes import `startup` from it at start
(`config.sources.load_startup_hooks`, via pyproject.toml), which registers `setup_django` with the core.
"""
