"""`State`: the one object that flows through a pipeline's stages, and `PipelineResult`: what
``Pipeline.execute`` returns by default, built from the state at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from datapipe_django.fetchers.base import HIGHLIGHTS_ATTR
from datapipe_django.timeouts import seconds_left

if TYPE_CHECKING:
    from django_filters import FilterSet

    from datapipe_django.chain import Attempt
    from datapipe_django.paging import Ordering
    from datapipe_django.pipeline import Pipeline
    from datapipe_django.request import PipelineRequest
    from datapipe_django.specs import Spec
    from datapipe_django.totals import Total

__all__ = ["PipelineResult", "State"]


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
        return seconds_left(self.deadline)


@dataclass
class PipelineResult:
    """A page of model instances and how it was obtained.

    ``count`` is the number of items on this page. ``source`` names every source that
    contributed (comma-separated, priority order; ``sources`` is the tuple). ``errors`` lists
    optional enrichers that failed: ``{"enricher": name, "code": ...}``. ``attempts`` says,
    per source, whether it answered, declined or was unavailable, and why. ``highlights``
    (``highlight=true``): per item, in item order, ``{field: [fragments]}``, the matched words
    in ``<em>``, the rest HTML-escaped. ``facets`` (``facets=...``): per field, the values and
    how many rows matching the request hold each, ``[{"value": v, "count": n}, ...]``.
    ``partial``: the page may lack rows, because a source that could hold some of them was
    unavailable and no source holding them too answered in its place (``unavailable`` names
    it); its ``next_cursor`` goes on after the last row served.
    """

    items: list[Any]
    has_more: bool = False
    next_cursor: str | None = None
    sources: tuple[str, ...] = ()
    errors: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    expand: frozenset[str] = frozenset()
    #: Every matching row, counted exactly (``?total=true``); None when not asked or not
    #: exact. ``total_exact``: None when not asked; False with ``total_reason`` saying why.
    total: int | None = None
    total_exact: bool | None = None
    total_reason: str = ""
    highlights: list[dict[str, list[str]]] | None = None
    facets: dict[str, list[dict[str, Any]]] | None = None
    partial: bool = False

    @property
    def count(self) -> int:
        """The number of items on this page (not the total: see ``total``)."""
        return len(self.items)

    @property
    def source(self) -> str:
        return ",".join(self.sources)

    @property
    def unavailable(self) -> tuple[str, ...]:
        """Sources that were asked but could not answer (down, timing out)."""
        return tuple(dict.fromkeys(
            a.source for a in self.attempts if a.outcome in {"unavailable", "timeout"}
        ))

    @property
    def item(self) -> Any:
        """The single row of a retrieve (``None`` when no source has it)."""
        return self.items[0] if self.items else None

    @classmethod
    def from_state(cls, state: State) -> PipelineResult:
        return cls(
            items=state.items,
            has_more=state.has_more,
            next_cursor=state.next_cursor,
            sources=state.sources,
            errors=state.errors,
            attempts=state.attempts,
            timings=state.timings,
            expand=state.expand,
            total=state.total.value if state.total is not None else None,
            total_exact=state.total.exact if state.total is not None else None,
            total_reason=state.total.reason if state.total is not None else "",
            highlights=[dict(getattr(obj, HIGHLIGHTS_ATTR, None) or {}) for obj in state.items]
            if state.highlight else None,
            facets=state.facet_counts,
            partial=state.partial,
        )
