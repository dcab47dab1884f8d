"""`PipelineRequest`: what a caller asks a pipeline for, free of any HTTP or DRF object."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["PipelineRequest", "normalize_expand", "normalize_names", "normalize_ordering"]


def normalize_ordering(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """``"-created_at,id"`` or ``["-created_at", "id"]`` → ``("-created_at", "id")``."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    cleaned = tuple(p.strip() for p in parts if p and p.strip())
    return cleaned or None


def normalize_names(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"status,mode"`` or ``["status", "mode"]`` → ``("status", "mode")`` (blank names
    dropped, duplicates kept once, order kept)."""
    if not value:
        return ()
    parts: list[str] = []
    for item in [value] if isinstance(value, str) else value:
        parts.extend(str(item).split(","))
    return tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))


def normalize_expand(value: str | Iterable[str] | None) -> frozenset[str]:
    """``"a,b.c"`` or ``["a", "b.c"]`` → ``{"a", "b.c"}`` (blank names dropped)."""
    if not value:
        return frozenset()
    parts: list[str] = []
    for item in [value] if isinstance(value, str) else value:
        parts.extend(str(item).split(","))
    return frozenset(p.strip() for p in parts if p.strip())


@dataclass(frozen=True)
class PipelineRequest:
    """One read request, as a pipeline sees it.

    ``filters`` are raw parameter values, as in a query string (a ``QueryDict`` or a plain
    dict whose values may be lists); the validate stage binds them to the pipeline's FilterSet.
    Give ``offset`` *or* ``cursor``, not both. ``only`` narrows the columns the sources
    read (see :func:`datapipe_django.stages.load_fields`). ``ordering=("relevance",)``
    orders a search by relevance. ``highlight`` (a boolean, or its query-string spelling)
    adds highlighted fragments of the search fields to each row; ``facets`` names fields of
    the pipeline's ``facet_fields`` to count. ``pk`` turns the request into a retrieve of one row.
    ``context`` carries anything else a custom stage, fetcher or enricher needs (the HTTP
    request, the user...); the core never reads it.
    """

    filters: Mapping[str, Any] = field(default_factory=dict)
    search: str | None = None
    tenant: Any = None
    limit: int | None = None
    offset: int | None = None
    cursor: str | None = None
    ordering: tuple[str, ...] | None = None
    expand: frozenset[str] = frozenset()
    auth_type: str | None = None
    pk: Any = None
    context: Mapping[str, Any] = field(default_factory=dict)
    #: Sparse fieldsets (drf-flex-fields' ``fields`` and ``omit``): response field paths,
    #: nested with dots like ``expand``. The core never renders; it keeps them for the
    #: renderer (the view's serializer) and the cache key.
    fields: frozenset[str] = frozenset()
    omit: frozenset[str] = frozenset()
    #: The model fields the response reads (None: every field). The view derives it from
    #: ``fields``/``omit`` and its serializer; the sources then load only these, plus what the
    #: pipeline itself needs (the pk, the ordering keys, the tenant field, the enrichers' keys).
    only: frozenset[str] | None = None
    #: Count every matching row too (``result.total``); None: the pipeline's ``total``.
    total: bool | None = None
    highlight: Any = False
    facets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Flexible inputs are normalised once, here.
        object.__setattr__(self, "ordering", normalize_ordering(self.ordering))
        object.__setattr__(self, "expand", normalize_expand(self.expand))
        object.__setattr__(self, "fields", normalize_expand(self.fields))
        object.__setattr__(self, "omit", normalize_expand(self.omit))
        if self.only is not None:
            object.__setattr__(self, "only", frozenset(self.only))
        object.__setattr__(self, "facets", normalize_names(self.facets))
        if self.search is not None:
            object.__setattr__(self, "search", self.search.strip() or None)

    def replace(self, **changes: Any) -> PipelineRequest:
        """A copy with ``changes`` applied (requests are immutable)."""
        return replace(self, **changes)
