"""`DatapipePanel`: every pipeline execution of a request, in django-debug-toolbar.

Install the extra (``pip install "datapipe-django[debug-toolbar]"``), set up
django-debug-toolbar as its documentation says, and add the panel::

    DEBUG_TOOLBAR_PANELS = [
        *debug_toolbar.settings.PANELS_DEFAULTS,
        "datapipe_django.debug_toolbar.DatapipePanel",
    ]

For each execution during the request (a view may run several pipelines) the panel shows the
request as the pipeline saw it, every source with its verdict and why (answered, declined,
unavailable, not needed), the SQL or the search body each source that answered ran, the cache
outcome, the enrichers with their outcome and duration, the stage timings and the total.

It listens to :data:`datapipe_django.observability.pipeline_executed` only while the toolbar
instruments a request, and only to executions on that request's thread.
"""

from __future__ import annotations

import threading
from typing import Any

from debug_toolbar.panels import Panel

from datapipe_django.observability import pipeline_executed

__all__ = ["DatapipePanel", "describe_execution"]

def _ms(seconds: float | None) -> float:
    return round((seconds or 0.0) * 1000, 2)


def _items(value: Any) -> list[Any]:
    if isinstance(value, set | frozenset):
        return [_text(v) for v in sorted(value, key=str)]
    return [_text(v) for v in value]


def _mapping(value: Any) -> dict[str, Any]:
    if hasattr(value, "lists"):  # a QueryDict
        return {k: v if len(v) > 1 else v[0] for k, v in value.lists()}
    return {str(k): _text(v) for k, v in value.items()}


def _text(value: Any) -> Any:
    """A JSON-able form of a request value (the toolbar stores the panel's data as JSON)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return _items(value)
    if hasattr(value, "lists") or isinstance(value, dict):
        return _mapping(value)
    return str(value)


def _queries(state: Any) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """Per source that answered: what it ran; per source: what it holds and what the chain's
    plan does with it (:func:`datapipe_django.inspect.describe_sources`), JSON-able."""
    from datapipe_django.inspect import describe_sources

    ran, plan = describe_sources(state)
    return {name: {str(k): _text(v) for k, v in details.items()}
            for name, details in ran.items()}, plan


def _source(attempt: Any, query: dict[str, Any], plan: dict[str, str]) -> dict[str, Any]:
    return {
        **plan, "name": attempt.source, "outcome": attempt.outcome, "reason": attempt.reason,
        "rows": attempt.count if attempt.outcome == "ok" else None,
        "ms": _ms(attempt.duration), "cache": attempt.meta.get("cache"),
        "sql": query.get("sql"), "search": query.get("query"),
        "details": {k: v for k, v in query.items() if k not in ("sql", "query")},
    }


def _asked(request: Any) -> dict[str, Any]:
    """The request as the pipeline saw it, without what it left empty."""
    asked = {
        "tenant": request.tenant, "auth_type": request.auth_type, "pk": request.pk,
        "filters": request.filters, "q": request.search, "ordering": request.ordering,
        "limit": request.limit, "offset": request.offset, "cursor": request.cursor,
        "expand": request.expand, "fields": request.fields, "omit": request.omit,
        "total": request.total,
    }
    return {k: _text(v) for k, v in asked.items()
            if v not in (None, "", (), {}) and v != frozenset()}


def _total(total: Any) -> dict[str, Any] | None:
    if total is None:
        return None
    return {"value": total.value, "exact": total.exact, "source": total.source,
            "reason": total.reason}


def describe_execution(state: Any, error: BaseException | None, duration: float
                       ) -> dict[str, Any]:
    """One execution as the panel shows it (plain JSON-able values)."""
    pipeline, request = state.pipeline, state.request
    queries, plan = _queries(state)
    return {
        "pipeline": pipeline.name,
        "operation": "retrieve" if request.pk is not None else "list",
        "fallback": pipeline.fallback.value,
        "ms": _ms(duration),
        "error": None if error is None else f"{type(error).__name__}: {error}",
        "request": _asked(request),
        "sources": [_source(a, queries.get(a.source, {}),
                            plan.get(a.source, {"holds": "", "plan": ""}))
                    for a in state.attempts],
        "served_by": list(state.sources),
        "items": len(state.items), "has_more": state.has_more,
        "enrichers": [{"name": e["enricher"], "outcome": e["outcome"], "ms": _ms(e["seconds"])}
                      for e in state.enrichments],
        "errors": _text(state.errors),
        "timings": [{"stage": name, "ms": _ms(seconds)} for name, seconds in
                    state.timings.items()],
        "total": _total(state.total),
    }


class DatapipePanel(Panel):
    """django-debug-toolbar panel: the request's pipeline executions (see the module)."""

    title = "Datapipe"
    template = "datapipe_django/debug_toolbar/panel.html"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._executions: list[dict[str, Any]] = []
        self._thread: int | None = None

    @property
    def nav_subtitle(self) -> str:
        executions = self.get_stats().get("executions", [])
        if not executions:
            return "no pipeline"
        ms = sum(e["ms"] for e in executions)
        return (f"{len(executions)} execution{'s' if len(executions) != 1 else ''} in "
                f"{ms:.1f} ms")

    def enable_instrumentation(self) -> None:
        self._thread = threading.get_ident()
        pipeline_executed.connect(self._record, dispatch_uid=f"datapipe-panel-{id(self)}")

    def disable_instrumentation(self) -> None:
        pipeline_executed.disconnect(dispatch_uid=f"datapipe-panel-{id(self)}")

    def _record(self, sender: Any, *, state: Any, error: BaseException | None,
                duration: float, **kwargs: Any) -> None:
        if threading.get_ident() != self._thread:
            return  # another request's execution (a threaded server)
        self._executions.append(describe_execution(state, error, duration))

    def generate_stats(self, request: Any, response: Any) -> None:
        self.record_stats({"executions": self._executions})
