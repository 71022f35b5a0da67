"""Celery tasks (named ``cachewarm.<name>``): thin wrappers over cachewarm.scan and cachewarm.refresh."""
