"""Declared invalidations: a model's saves and deletes invalidate the cache keys and tags built from its fields.

    @invalidate_on_change(keys=["product:{id}", "product:slug:{slug}"], tags=["category:{category_id}"],
                          version="version", via="outbox")
    class Product(models.Model): ...

Templates name the instance's attributes (``{pk}`` too); a template with a ``None`` value is skipped. `version`
names an integer field sent with each key event (never with a tag: versions are per key); when only some keys
carry the instance's version, give `keys` as a dict, template -> version field or None:
``keys={"product:{id}": "version", "category:{category_id}": None}``. `via` is ``"outbox"``
or ``"on_commit"`` (delivery.py says what each guarantees). When a field a template uses changes (a new slug),
the key built from the value the instance was loaded with is invalidated too: the values a template uses are
remembered at ``post_init`` (from the instance's ``__dict__``: a deferred field is never fetched for this).

``QuerySet.update()`` and ``bulk_create`` send no signals; call `invalidate(...)` next to them.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import router
from django.db.models.signals import post_delete, post_init, post_save

from .delivery import VIAS, Target, Via, deliver

M = TypeVar("M", bound=type)
LOADED_ATTR = "_cachewarm_loaded"


def template_fields(template: str) -> list[str]:
    """The attribute names a template uses (``"product:{id}"`` -> ``["id"]``); attribute paths and format specs
    are refused: a key must be exactly the field's text."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"template {template!r}: placeholders are plain field names, like {{id}}")
        names.append(name)
    return names


def render(templates: Sequence[str], values: Callable[[str], Any]) -> list[str]:
    """Each template filled from `values`; one whose value is None is left out."""
    out = []
    for template in templates:
        found = {name: values(name) for name in template_fields(template)}
        if None not in found.values():
            out.append(template.format_map(found))
    return out


@dataclass(frozen=True)
class Invalidation:
    """What one model's changes invalidate, and how it is delivered."""

    keys: tuple[tuple[str, str | None], ...] = ()  # (template, version field)
    tags: tuple[str, ...] = ()
    via: Via = "on_commit"
    tracked: tuple[str, ...] = ()  # fields remembered at load (those templates use, but the primary key)

    def targets(self, instance: Any) -> list[Target]:
        """Keys (with the version) and tags of the instance as it is now, and those built from the values it was
        loaded with, when they differ."""
        loaded: dict[str, Any] = instance.__dict__.get(LOADED_ATTR) or {}

        def now(name: str) -> Any:
            return getattr(instance, name)

        def before(name: str) -> Any:
            return loaded[name] if name in loaded else getattr(instance, name)

        def both(templates: tuple[str, ...]) -> list[str]:
            out = render(templates, now)
            return out + [name for name in render(templates, before) if name not in out] if loaded else out

        targets: list[Target] = []
        for template, version_field in self.keys:
            version = _version(instance, version_field)
            targets += [(key, None, version) for key in both((template,))]
        return targets + [(None, tag, None) for tag in both(self.tags)]

    def remember(self, instance: Any) -> None:
        """Keeps the values the tracked fields have now (at load, and after each save)."""
        values = instance.__dict__
        instance.__dict__[LOADED_ATTR] = {name: values[name] for name in self.tracked if name in values}


def _version(instance: Any, name: str | None) -> int | None:
    if name is None:
        return None
    value = getattr(instance, name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{type(instance).__name__}.{name}: a version must be an integer, not {type(value).__name__}")
    return value  # type: ignore[no-any-return]


def _tracked(model: type, templates: Iterable[str]) -> tuple[str, ...]:
    """The concrete fields, other than the primary key, whose change would change a key or tag."""
    meta: Any = model._meta  # type: ignore[attr-defined]
    attnames = {f.attname for f in meta.concrete_fields if not f.primary_key}
    used = {name for template in templates for name in template_fields(template)}
    return tuple(sorted(used & attnames))


def invalidate_on_change(model: M | None = None, *, keys: Iterable[str] | Mapping[str, str | None] = (),
                         tags: Iterable[str] = (), version: str | None = None, via: Via = "on_commit") -> Any:
    """Declares what `model`'s saves and deletes invalidate (see the module's docstring). Used as a class
    decorator, or called with the model (in an app's ``ready()``, for a model that is not yours)."""
    if via not in VIAS:
        raise ValueError(f"via must be one of {', '.join(VIAS)}, not {via!r}")
    if isinstance(keys, Mapping):
        if version is not None:
            raise ValueError("give version either per key (keys as a dict) or for every key, not both")
        versioned = tuple(keys.items())
    else:
        versioned = tuple((template, version) for template in keys)
    tags = tuple(tags)
    templates = tuple(template for template, _ in versioned) + tags
    if not templates:
        raise ValueError("give at least one key or tag template")
    for template in templates:
        template_fields(template)

    def declare(target: M) -> M:
        names = {name for template in templates for name in template_fields(template)}
        names |= {field for _, field in versioned if field is not None}
        missing = sorted(name for name in names if not hasattr(target, name))
        if missing:  # a typo fails here, at import, not inside some later save's transaction
            raise ValueError(f"{target.__name__} has no field or attribute {missing[0]!r}")
        spec = Invalidation(versioned, tags, via, _tracked(target, templates))
        _connect(target, spec)
        return target

    return declare if model is None else declare(model)


def _connect(model: type, spec: Invalidation) -> None:
    uid = f"cachewarm.invalidate.{model.__module__}.{model.__qualname__}"

    def on_save(sender: type, instance: Any, using: str, raw: bool = False, **_: Any) -> None:
        if raw:  # loaddata: fixtures are not changes of live data
            return
        deliver(spec.targets(instance), via=spec.via, using=using)
        if spec.tracked:
            spec.remember(instance)

    def on_delete(sender: type, instance: Any, using: str, **_: Any) -> None:
        deliver(spec.targets(instance), via=spec.via, using=using)

    post_save.connect(on_save, sender=model, weak=False, dispatch_uid=uid + ".save")
    post_delete.connect(on_delete, sender=model, weak=False, dispatch_uid=uid + ".delete")
    if spec.tracked:
        def on_init(sender: type, instance: Any, **_: Any) -> None:
            spec.remember(instance)

        post_init.connect(on_init, sender=model, weak=False, dispatch_uid=uid + ".init")


def invalidate(*keys: str, tags: Iterable[str] = (), version: int | None = None, via: Via = "on_commit",
               using: str | None = None, model: type | None = None) -> None:
    """Invalidates `keys` (each with `version`) and `tags` after the current transaction of database `using`
    commits, the same way a declared model's save does: for ``QuerySet.update()``, raw SQL, anything that sends no
    signal. `using` defaults to the database Django routes `model`'s writes to (``default`` without a model)."""
    database = using or (router.db_for_write(model) if model is not None else "default")
    targets: list[Target] = [(key, None, version) for key in keys] + [(None, tag, None) for tag in tags]
    deliver(targets, via=via, using=database)
