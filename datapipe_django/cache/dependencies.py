"""What a cached page depends on besides its own model: the models its filters join."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models

__all__ = ["pipeline_paths", "related_models"]


@lru_cache(maxsize=1024)
def related_models(model: type[models.Model], path: str) -> frozenset[type[models.Model]]:
    """Models a filter on ``path`` reads besides ``model`` (joins), e.g. ``owner__name`` →
    ``{Owner}``. A path ending at a local foreign key (``owner``) reads no other table."""
    found: set[type[models.Model]] = set()
    meta = model._meta
    parts = path.lstrip("^=@$").split("__")
    for i, part in enumerate(parts):
        try:
            field = meta.pk if part == "pk" else meta.get_field(part)
        except FieldDoesNotExist:
            break
        related: Any = getattr(field, "related_model", None)
        if not getattr(field, "is_relation", False) or not (
                isinstance(related, type) and issubclass(related, models.Model)):
            break
        last = i == len(parts) - 1
        if last and getattr(field, "concrete", False) and not field.many_to_many:
            break  # the local column
        found.add(related._meta.concrete_model or related)
        through = getattr(getattr(field, "remote_field", None), "through", None)
        if field.many_to_many and isinstance(through, type):
            found.add(through)
        meta = related._meta
    return frozenset(found)


def pipeline_paths(pipeline: Any) -> set[str]:
    paths = {p for p in getattr(pipeline, "search_fields", ()) if p}
    if getattr(pipeline, "tenant_field", None):
        paths.add(pipeline.tenant_field)
    filterset = getattr(pipeline, "filterset_class", None)
    for flt in getattr(filterset, "base_filters", {}).values():
        name = getattr(flt, "field_name", None)
        if isinstance(name, str) and name:
            paths.add(name)
    return paths
