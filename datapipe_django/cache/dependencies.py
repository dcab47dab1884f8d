"""What a cached page depends on besides its own model: the models its filters join."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.db import models

from datapipe_django.specs.paths import joined_models

__all__ = ["pipeline_paths", "related_models"]


@lru_cache(maxsize=1024)
def related_models(model: type[models.Model], path: str) -> frozenset[type[models.Model]]:
    """Models a filter on ``path`` (a search field may carry a ``^=@$`` prefix) reads besides
    ``model`` (joins), e.g. ``owner__name`` → ``{Owner}``: :func:`~datapipe_django.specs.paths.
    joined_models`. A path ending at a local foreign key (``owner``) reads no other table."""
    return joined_models(model, path.lstrip("^=@$"))


def pipeline_paths(pipeline: Any) -> set[str]:
    """The field paths ``pipeline``'s requests may filter through: its search fields, tenant
    field and FilterSet filters' field names."""
    paths = {p for p in getattr(pipeline, "search_fields", ()) if p}
    if getattr(pipeline, "tenant_field", None):
        paths.add(pipeline.tenant_field)
    filterset = getattr(pipeline, "filterset_class", None)
    for flt in getattr(filterset, "base_filters", {}).values():
        name = getattr(flt, "field_name", None)
        if isinstance(name, str) and name:
            paths.add(name)
    return paths
