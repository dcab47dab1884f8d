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
from django.db import DatabaseError

from datapipe_django.chain import FetcherChain
from datapipe_django.observability import pipeline_executed

__all__ = ["DatapipePanel", "describe_execution"]

#: Outcomes of sources that did not run a query.
_NOT_RUN = {"declined", "not_needed"}


def _ms(seconds: float | None) -> float:
    return round((seconds or 0.0) * 1000, 2)


def _text(value: Any) -> Any:
    """A JSON-able form of a request value (the toolbar stores the panel's data as JSON)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_text(v) for v in (sorted(value, key=str) if isinstance(value, set | frozenset)
                                   else value)]
    if hasattr(value, "lists"):  # a QueryDict
        return {k: v if len(v) > 1 else v[0] for k, v in value.lists()}
    if isinstance(value, dict):
        return {str(k): _text(v) for k, v in value.items()}
    return str(value)


def _queries(state: Any) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """Per source that answered: what it ran (its ``explain`` of the request it was asked);
    per source: what it holds and what the chain's plan does with it."""
    from datapipe_django.inspect import describe_fetcher
    from datapipe_django.stages import fetch_request

    pipeline = state.pipeline
    if state.ordering is None:  # the request did not pass validation: nothing was fetched
        return {}, {}
    asked = fetch_request(state)
    chain = FetcherChain(pipeline.fetchers, pipeline.fallback)
    plan = {step.source: {"holds": step.holds, "plan": f"{step.action}: {step.verdict}"}
            for step in chain.plan(asked).steps}
    candidates = sum(1 for a in state.attempts if a.outcome != "declined") or 1
    wide, _ = chain.source_request(asked, candidates=candidates, offset=state.offset,
                                   limit=state.limit)
    ran = {a.source for a in state.attempts if a.outcome not in _NOT_RUN}
    found: dict[str, dict[str, Any]] = {}
    for fetcher in pipeline.fetchers:
        if fetcher.name not in ran:
            continue
        try:
            details = describe_fetcher(fetcher, wide)
        except (DatabaseError, ValueError, TypeError) as exc:  # the source went away since
            details = {"error": f"{type(exc).__name__}: {exc}"}
        found[fetcher.name] = {str(k): _text(v) for k, v in details.items()}
    return found, plan


def describe_execution(state: Any, error: BaseException | None, duration: float
                       ) -> dict[str, Any]:
    """One execution as the panel shows it (plain JSON-able values)."""
    pipeline, request = state.pipeline, state.request
    queries, plan = _queries(state)
    sources = []
    for attempt in state.attempts:
        query = queries.get(attempt.source, {})
        sources.append({
            **plan.get(attempt.source, {"holds": "", "plan": ""}),
            "name": attempt.source, "outcome": attempt.outcome, "reason": attempt.reason,
            "rows": attempt.count if attempt.outcome == "ok" else None,
            "ms": _ms(attempt.duration), "cache": attempt.meta.get("cache"),
            "sql": query.get("sql"), "search": query.get("query"),
            "details": {k: v for k, v in query.items() if k not in ("sql", "query")},
        })
    total = state.total
    asked = {
        "tenant": request.tenant, "auth_type": request.auth_type, "pk": request.pk,
        "filters": request.filters, "q": request.search, "ordering": request.ordering,
        "limit": request.limit, "offset": request.offset, "cursor": request.cursor,
        "expand": request.expand, "fields": request.fields, "omit": request.omit,
        "total": request.total,
    }
    return {
        "pipeline": pipeline.name,
        "operation": "retrieve" if request.pk is not None else "list",
        "fallback": pipeline.fallback.value,
        "ms": _ms(duration),
        "error": None if error is None else f"{type(error).__name__}: {error}",
        "request": {k: _text(v) for k, v in asked.items() if v not in (None, "", (), {})
                    and v != frozenset()},
        "sources": sources,
        "served_by": list(state.sources),
        "items": len(state.items), "has_more": state.has_more,
        "enrichers": [{"name": e["enricher"], "outcome": e["outcome"], "ms": _ms(e["seconds"])}
                      for e in state.enrichments],
        "errors": _text(state.errors),
        "timings": [{"stage": name, "ms": _ms(seconds)} for name, seconds in
                    state.timings.items()],
        "total": None if total is None else {
            "value": total.value, "exact": total.exact, "source": total.source,
            "reason": total.reason},
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
