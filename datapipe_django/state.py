"""`State`: the one object that flows through a pipeline's stages."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django_filters import FilterSet

    from datapipe_django.chain import Attempt
    from datapipe_django.paging import Ordering
    from datapipe_django.pipeline import Pipeline
    from datapipe_django.request import PipelineRequest
    from datapipe_django.specs import Spec
    from datapipe_django.totals import Total

__all__ = ["State"]


@dataclass
class State:
    """Everything one execution knows. Each stage reads and writes it; nothing else is shared.

    The validate stage fills ``spec``, ``ordering``, ``limit``, ``offset``, ``after``,
    ``expand``, ``highlight`` and ``facets``; fetch fills ``items``, ``has_more``, ``sources``,
    ``attempts`` and ``facet_counts``; enrich adds to
    ``errors`` and narrows ``expand`` to the paths it loaded; build sets ``next_cursor`` and
    ``result``. ``extra`` is free for custom stages.
    """

    pipeline: Pipeline
    request: PipelineRequest
    deadline: float | None = None
    filterset: FilterSet | None = None
    spec: Spec | None = None
    uncompilable: str | None = None
    ordering: Ordering | None = None
    limit: int = 0
    offset: int = 0
    after: tuple[Any, ...] | None = None
    expand: frozenset[str] = frozenset()
    highlight: bool = False
    facets: tuple[str, ...] = ()
    #: ``{field: [{"value": v, "count": n}, ...]}`` when the request asked for facets.
    facet_counts: dict[str, list[dict[str, Any]]] | None = None
    items: list[Any] = field(default_factory=list)
    has_more: bool = False
    next_cursor: str | None = None
    sources: tuple[str, ...] = ()
    #: The page may lack rows of a source that was unavailable (see ``PipelineResult``).
    partial: bool = False
    attempts: list[Attempt] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    result: Any = None
    #: The enrichers that ran: ``{"enricher", "outcome", "seconds"}`` each, as they ended.
    enrichments: list[dict[str, Any]] = field(default_factory=list)
    #: The count of every matching row, when the request asked for it (``?total=true``).
    total: Total | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def remaining(self) -> float | None:
        """Seconds left of the pipeline's budget (never negative), or None without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())
