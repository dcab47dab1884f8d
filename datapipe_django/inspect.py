"""Inspection as data: what a pipeline declares, the plan of a request, the stores' health.

Everything here returns plain, JSON-able data (typed dicts) and imports no DRF, so that a
management command, a debug panel, a health endpoint or a test can show it as it likes:

- :func:`describe`: a pipeline's declaration (its fetchers, enrichers, filters, ordering);
  :func:`describe_fetcher`: what one fetcher would run for a request (its SQL, search body,
  cache key...).
- :func:`explain`: the plan of a :class:`~datapipe_django.request.PipelineRequest`: the
  validate stage's verdict, each fetcher's verdict in priority order, how the chain would
  consult them, the enrichers that would run. :func:`execute`: run it with a recording tracer
  and give the span tree and the result.
- :func:`health`: every store the pipelines read (databases, with the lag of replicas, caches,
  and fetchers that report their own health), and per pipeline whether any source can answer;
  :func:`health_failures` says what of it should fail a check.
- :func:`describe_documents`: the search Documents, their indices and pending rows.

``manage.py datapipe`` and ``manage.py datapipe_index`` print what these return.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, TypedDict

from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections

from datapipe_django import stages
from datapipe_django.chain import FallbackMode, FetcherChain, PlanStep
from datapipe_django.conf import datapipe_settings
from datapipe_django.errors import PipelineError, ValidationFailed, first_line
from datapipe_django.fetchers.base import FetchRequest, Verdict
from datapipe_django.observability import RecordedSpan, RecordingTracer
from datapipe_django.pipeline import Pipeline
from datapipe_django.replicas import forget_replica_status, replica_status
from datapipe_django.request import PipelineRequest
from datapipe_django.specs import filter_parameters
from datapipe_django.state import State
from datapipe_django.timeouts import statement_timeout

__all__ = [
    "CheckInfo",
    "DocumentInfo",
    "EnricherInfo",
    "EnricherPlan",
    "Execution",
    "FetcherInfo",
    "FetcherPlan",
    "HealthReport",
    "PipelineHealth",
    "PipelineInfo",
    "Plan",
    "SpanNode",
    "describe",
    "describe_documents",
    "describe_fetcher",
    "describe_sources",
    "execute",
    "explain",
    "health",
    "health_failures",
    "held_logs",
    "known_documents",
]


# -- describe ---------------------------------------------------------------------------------

class FetcherInfo(TypedDict):
    name: str
    kind: str
    database: str | None


class EnricherInfo(TypedDict):
    name: str
    kind: str
    auth_types: list[str]
    required: bool
    always: bool


class PipelineInfo(TypedDict):
    """A pipeline's declaration (``datapipe list``)."""

    name: str
    model: str
    fallback: str
    timeout: float | None
    tenant_field: str | None
    search_fields: list[str]
    ordering: list[str]
    ordering_fields: list[str]
    #: What a client sends: created_at_after and created_at_before for a range filter.
    filters: list[str]
    filterset: dict[str, list[str]]
    fetchers: list[FetcherInfo]
    enrichers: list[EnricherInfo]


def _signed(fields: Any) -> list[str]:
    return [("-" if f.descending else "") + f.name for f in fields]


def describe(pipeline: Pipeline) -> PipelineInfo:
    """The declaration of ``pipeline`` as plain data."""
    fs = pipeline.filterset_class
    parameters = filter_parameters(fs) if fs is not None else {}
    return {
        "name": pipeline.name,
        "model": pipeline.model._meta.label,
        "fallback": pipeline.fallback.name,
        "timeout": pipeline.timeout,
        "tenant_field": pipeline.tenant_field,
        "search_fields": list(pipeline.search_fields),
        "ordering": _signed(pipeline.default_ordering.fields),
        "ordering_fields": sorted(pipeline.ordering_fields - {"pk"}),
        "filters": sorted(p for ps in parameters.values() for p in ps),
        "filterset": parameters,
        "fetchers": [{"name": f.name, "kind": type(f).__name__,
                      "database": getattr(f, "using", None)} for f in pipeline.fetchers],
        "enrichers": [{"name": e.name, "kind": type(e).__name__,
                       "auth_types": sorted(e.auth_types or ()),
                       "required": bool(e.required), "always": bool(e.always)}
                      for e in pipeline.enrichers],
    }


def _db_plan(fetcher: Any, request: Any) -> dict[str, Any]:
    inner = fetcher.fetcher
    build = getattr(fetcher, "build_queryset", None) or getattr(inner, "build_queryset", None)
    if not callable(build):
        return {}
    try:
        return {"db_plan": build(request).explain()}
    except DatabaseError as exc:
        return {"db_plan": f"(unavailable: {first_line(exc)})"}


def describe_fetcher(fetcher: Any, request: Any, *, db_plan: bool = False) -> dict[str, Any]:
    """What ``fetcher`` would run for ``request`` (a ``FetchRequest``): its
    ``explain(request)`` (an ORM fetcher's SQL, a search fetcher's query; a caching wrapper's
    alias and key, then the wrapped fetcher's own explanation); with ``db_plan``, the
    database's query plan (``EXPLAIN``)."""
    details: dict[str, Any] = dict(fetcher.explain(request))
    if db_plan:
        details.update(_db_plan(fetcher, request))
    return details


# -- explain ----------------------------------------------------------------------------------

class FetcherPlan(TypedDict):
    position: int
    name: str
    kind: str
    #: Whether it would read for this request.
    serves: bool
    reason: str
    holds: str | None
    #: The chain's plan for it: ``serves``, ``prefix``, ``reads``, ``skipped``... or
    #: ``declined`` (its ``can_handle`` said no).
    action: str
    verdict: str
    details: dict[str, Any]


class EnricherPlan(TypedDict):
    name: str
    kind: str
    runs: bool
    status: str


class Plan(TypedDict, total=False):
    """The plan of a request. ``page``, ``specification``, ``expand``, ``fetchers``,
    ``strategy`` and ``enrichers`` are there only when the request is ``valid``."""

    pipeline: dict[str, Any]
    request: dict[str, Any]
    valid: bool
    errors: dict[str, list[str]]
    page: dict[str, Any]
    specification: str
    expand: list[str]
    fetchers: list[FetcherPlan]
    strategy: str
    enrichers: list[EnricherPlan]


def _lists(filters: Any) -> dict[str, list[Any]]:
    if hasattr(filters, "lists"):
        return dict(filters.lists())
    return {k: list(v) if isinstance(v, list | tuple) else [v] for k, v in filters.items()}


def _head(pipeline: Pipeline, request: PipelineRequest) -> Plan:
    return {
        "pipeline": {"name": pipeline.name, "model": pipeline.model._meta.label,
                     "fallback": pipeline.fallback.name, "timeout": pipeline.timeout},
        "request": {"pk": request.pk, "tenant": request.tenant, "auth_type": request.auth_type,
                    "filters": {k: (v if len(v) > 1 else v[0])
                                for k, v in _lists(request.filters).items()},
                    "search": request.search},
        "valid": True, "errors": {},
    }


def _page(state: State) -> dict[str, Any]:
    assert state.ordering is not None  # the validate stage set it
    return {"limit": state.limit, "offset": state.offset, "after": state.after,
            "ordering": _signed(state.ordering.fields),
            "highlight": state.highlight, "facets": list(state.facets)}


def explain(pipeline: Pipeline, request: PipelineRequest, *, db_plan: bool = False) -> Plan:
    """The plan of ``request`` as plain data: validation, fetchers and enrichers. Runs the
    validate stage (no query) and asks each fetcher for its verdict and what it would run;
    with ``db_plan`` each database is asked for its query plan too."""
    timeout = pipeline.timeout
    state = State(pipeline=pipeline, request=request,
                  deadline=time.monotonic() + timeout if timeout is not None else None)
    plan = _head(pipeline, request)
    try:
        stages.validate(state)
    except ValidationFailed as exc:
        plan["valid"], plan["errors"] = False, exc.errors
        return plan
    plan["page"] = _page(state)
    plan["specification"] = (repr(state.spec) if state.spec is not None
                             else f"none: filter {state.uncompilable!r} cannot be compiled")
    plan["expand"] = sorted(state.expand)
    plan["fetchers"], plan["strategy"] = _FetcherPlanner(pipeline, state, db_plan).plan()
    plan["enrichers"] = _enrichers(pipeline, state)
    return plan


_READING = ("serves", "prefix", "reads")

#: Outcomes of sources that ran no query.
_NOT_RUN = {"declined", "not_needed"}


def _steps(chain: FetcherChain, asked: FetchRequest) -> dict[str, PlanStep]:
    """The chain's plan for each source, by name."""
    return {step.source: step for step in chain.plan(asked).steps}


def describe_sources(state: State) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """After an execution: per source that ran a query, what it ran (its ``explain`` of the
    request it was asked, a source that went away since says so under ``error``); per source,
    what it holds and the chain's plan for it (``{"holds": ..., "plan": "action: verdict"}``).
    Empty for a request that did not pass validation (nothing was fetched)."""
    if state.ordering is None:
        return {}, {}
    pipeline = state.pipeline
    asked = stages.fetch_request(state)
    chain = FetcherChain(pipeline.fetchers, pipeline.fallback)
    plan = {name: {"holds": step.holds, "plan": f"{step.action}: {step.verdict}"}
            for name, step in _steps(chain, asked).items()}
    candidates = sum(1 for a in state.attempts if a.outcome != "declined") or 1
    wide, _ = chain.source_request(asked, candidates=candidates, offset=state.offset,
                                   limit=state.limit)
    ran = {a.source for a in state.attempts if a.outcome not in _NOT_RUN}
    return {f.name: _ran(f, wide) for f in pipeline.fetchers if f.name in ran}, plan


def _ran(fetcher: Any, request: FetchRequest) -> dict[str, Any]:
    try:
        return describe_fetcher(fetcher, request)
    except (DatabaseError, ValueError, TypeError) as exc:  # the source went away since
        return {"error": f"{type(exc).__name__}: {exc}"}


class _FetcherPlanner:
    """Each fetcher's verdict and what it would run, and the chain's strategy, for one
    validated state."""

    def __init__(self, pipeline: Pipeline, state: State, db_plan: bool) -> None:
        self.pipeline, self.state, self.db_plan = pipeline, state, db_plan
        self.asked = stages.fetch_request(state)
        self.chain = FetcherChain(pipeline.fetchers, pipeline.fallback)
        self.verdicts = self.chain.verdicts(self.asked)
        self.candidates = [f for f, v in self.verdicts if v]
        self.source_request, self.skip = self.chain.source_request(
            self.asked, candidates=max(1, len(self.candidates)), offset=state.offset,
            limit=state.limit)
        self.steps = _steps(self.chain, self.asked)
        self.tiered = any(step.action in ("prefix", "skipped") or step.holds != "every row"
                          for step in self.steps.values() if step.mirror_of is None)

    def plan(self) -> tuple[list[FetcherPlan], str]:
        fetchers = [self.entry(i, fetcher, verdict)
                    for i, (fetcher, verdict) in enumerate(self.verdicts, 1)]
        if self.tiered:
            return fetchers, _tiered_strategy(self.pipeline, fetchers)
        return fetchers, _strategy(self.pipeline, self.candidates, self.source_request,
                                   self.skip, self.asked.size)

    def asked_of(self, step: PlanStep) -> FetchRequest:
        """What a reading source is asked: the wide window of a merge or, tiered, the page
        within its region."""
        if not self.tiered:
            return self.source_request
        spec = self.asked.spec
        return replace(self.asked, offset=self.state.offset, size=self.state.limit + 1,
                       spec=spec if step.region is None or spec is None else spec & step.region)

    def entry(self, position: int, fetcher: Any, verdict: Verdict) -> FetcherPlan:
        step = self.steps.get(fetcher.name)
        reads = bool(verdict) and step is not None and step.action in _READING
        return {
            "position": position, "name": fetcher.name, "kind": type(fetcher).__name__,
            "serves": reads, "reason": _reason(verdict, step, reads),
            "holds": step.holds if step is not None else None,
            "action": step.action if step is not None else "declined",
            "verdict": step.verdict if step is not None else verdict.reason,
            "details": describe_fetcher(fetcher, self.asked_of(step), db_plan=self.db_plan)
            if reads and step is not None else {},
        }


def _reason(verdict: Verdict, step: PlanStep | None, reads: bool) -> str:
    """Why a fetcher does not read: its own verdict, or the chain's plan for it."""
    if not verdict:
        return verdict.reason
    return "" if reads or step is None else step.verdict


def _strategy(pipeline: Pipeline, candidates: list[Any], asked: Any, skip: int,
              need: int) -> str:
    names = [f.name for f in candidates]
    if not names:
        return "No source can serve this request: it would fail with NoFetcher (400)."
    if asked.pk is not None:
        return (f"Retrieve: {', '.join(names)} in priority order; the first source that has "
                f"the row settles it.")
    if pipeline.fallback is FallbackMode.FIRST_SUCCESS:
        return (f"FIRST_SUCCESS: {', '.join(names)} in turn, each asked for {asked.size} rows; "
                f"the first that answers with rows serves the page alone.")
    if len(names) == 1:
        return (f"{names[0]} alone serves the page, asked for {asked.size} rows from offset "
                f"{asked.offset}.")
    window = (f"each asked for {asked.size} rows from offset {asked.offset}"
              + (f"; the merged rows are sliced from {skip}" if skip else ""))
    if pipeline.fallback is FallbackMode.PARALLEL:
        return f"PARALLEL: {', '.join(names)} read at once and merged, {window}."
    rest = ", then ".join(names[1:])
    return (f"SEQUENTIAL: {names[0]} first, then {rest} only while fewer than {need} rows are "
            f"merged or the source before is unavailable; {window}.")


def _tiered_strategy(pipeline: Pipeline, fetchers: list[FetcherPlan]) -> str:
    reading = [f["name"] for f in fetchers if f["serves"]]
    if not reading:
        return "No source can serve this request: it would fail with NoFetcher (400)."
    return (f"{pipeline.fallback.name}, planned from what each source holds: "
            f"{', then '.join(reading)}, each asked only for the rows the page still needs "
            f"(an offset past a tier's rows pushed down to the next by its count); a mirror "
            f"or a later source stands in for one that is unavailable.")


def _enricher_status(enricher: Any, runs: bool, auth_type: str | None) -> str:
    if not runs:
        if not enricher.can_enrich(auth_type):
            return f"not for auth type {auth_type!r}"
        return "not asked for"
    status = "runs (always)" if enricher.always else "runs (asked for)"
    if enricher.required:
        status += ", required: its failure fails the request"
    return status


def _enrichers(pipeline: Pipeline, state: State) -> list[EnricherPlan]:
    auth_type = state.request.auth_type
    selected = {id(e) for e in pipeline.composite_enricher.select(state.expand, auth_type)}
    return [{"name": e.name, "kind": type(e).__name__, "runs": id(e) in selected,
             "status": _enricher_status(e, id(e) in selected, auth_type)}
            for e in pipeline.enrichers]


# -- execute with a recording tracer ----------------------------------------------------------

class SpanNode(TypedDict):
    label: str
    ms: float | None
    info: str
    children: list[SpanNode]


class Execution(TypedDict, total=False):
    """What ``execute`` saw: ``tree`` (the span tree), ``result`` (None when it failed),
    ``error`` (``"code: message"`` or None); the command adds ``log``."""

    tree: SpanNode | None
    result: dict[str, Any] | None
    error: str | None
    log: list[dict[str, str]]


def _result_data(result: Any, request: PipelineRequest) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "source": result.source, "count": result.count, "has_more": result.has_more,
        "next_cursor": result.next_cursor, "errors": result.errors,
        # A retrieve: whether a source had the row (None for a list).
        "pk": request.pk, "found": None if request.pk is None else bool(result.items),
        "attempts": [{"source": a.source, "outcome": a.outcome, "reason": a.reason,
                      "rows": a.count, "ms": round(a.duration * 1000, 3)}
                     for a in result.attempts]}


def execute(pipeline: Pipeline, request: PipelineRequest
            ) -> tuple[Execution, PipelineError | None]:
    """Run ``request`` on a copy of ``pipeline`` that records its spans; the span tree and the
    result (or the error) as plain data, and the error itself."""
    recorder = RecordingTracer()
    traced = copy.copy(pipeline)  # the registered pipeline keeps its own tracer
    traced.tracer = recorder
    failure: PipelineError | None = None
    result: Any = None
    try:
        result = traced.execute(request)
    except PipelineError as exc:
        failure = exc
    roots = recorder.roots
    execution: Execution = {
        "tree": _node(roots[0], [f.name for f in pipeline.fetchers]) if roots else None,
        "result": _result_data(result, request),
        "error": None if failure is None else f"{failure.code}: {failure.message}",
    }
    return execution, failure


@contextlib.contextmanager
def held_logs() -> Iterator[list[logging.LogRecord]]:
    """Hold back every log record while the block runs (no handler writes it: a console
    handler would write into a report) and give them, in order, to the caller."""
    records: list[logging.LogRecord] = []
    seen: set[int] = set()

    def hold(record: logging.LogRecord) -> bool:
        if id(record) not in seen:  # one record reaches several handlers
            seen.add(id(record))
            records.append(record)
        return False

    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict
                                      .values() if isinstance(logger, logging.Logger))]
    handlers = {id(h): h for logger in loggers for h in logger.handlers}
    if logging.lastResort is not None:
        handlers[id(logging.lastResort)] = logging.lastResort
    for handler in handlers.values():
        handler.addFilter(hold)
    try:
        yield records
    finally:
        for handler in handlers.values():
            handler.removeFilter(hold)


def _pipeline_span(span: RecordedSpan, name: str) -> tuple[str, list[str]]:
    a = span.attributes
    label = f"{a.get('datapipe.pipeline')} {a.get('datapipe.operation', '')}".strip()
    if "datapipe.sources" not in a:
        return label, []
    return label, [f"served by {','.join(a['datapipe.sources']) or 'no source'}, "
                   f"{a.get('datapipe.item_count')} items"]


def _stage_span(span: RecordedSpan, name: str) -> tuple[str, list[str]]:
    a = span.attributes
    if name != "fetch" or "datapipe.fallback" not in a:
        return name, []
    return name, [f"fallback: {a['datapipe.fallback.reason']}" if a["datapipe.fallback"]
                  else "no fallback"]


#: What a source's or an enricher's span says, by attribute, after its outcome.
_WORK_INFO = (("datapipe.item_count", "{} rows"), ("datapipe.cache", "cache {}"))


def _work_span(span: RecordedSpan, name: str) -> tuple[str, list[str]]:
    a = span.attributes
    kind = span.name.removeprefix("datapipe.").partition(".")[0]
    info = [str(a.get("datapipe.outcome") or ("ok" if span.error is None else "failed"))]
    info += [text.format(a[key]) for key, text in _WORK_INFO if key in a]
    if a.get("datapipe.reason"):
        info.append(str(a["datapipe.reason"]))
    return f"{kind} {name}", info


#: A span's label and what it says, by the kind of span (``datapipe.<kind>.<name>``).
_SPAN_KINDS: dict[str, Callable[[RecordedSpan, str], tuple[str, list[str]]]] = {
    "pipeline": _pipeline_span, "stage": _stage_span, "source": _work_span,
    "enricher": _work_span,
}


def _label(span: RecordedSpan) -> tuple[str, list[str]]:
    kind, _, name = span.name.removeprefix("datapipe.").partition(".")
    describe_span = _SPAN_KINDS.get(kind)
    if describe_span is None or (kind == "pipeline" and span.name != "datapipe.pipeline"):
        return span.name, []
    return describe_span(span, name)


def _event_nodes(span: RecordedSpan) -> list[SpanNode]:
    """The sources a span recorded as events (declined, not needed...) as leaf nodes."""
    return [{"label": f"source {attributes.get('datapipe.source')}", "ms": None,
             "info": f"{event.removeprefix('datapipe.source.')}: "
                     f"{attributes.get('datapipe.reason', '')}", "children": []}
            for event, attributes in span.events if event.startswith("datapipe.source.")]


def _node(span: RecordedSpan, order: list[str]) -> SpanNode:
    """A span as a tree node; the sources under the fetch stage in priority ``order``."""
    label, info = _label(span)
    if "error.type" in span.attributes:
        info.append(f"error {span.attributes['error.type']}")
    children = [_node(c, order) for c in sorted(span.children, key=lambda s: s.start)]
    children += _event_nodes(span)
    if span.name == "datapipe.stage.fetch":
        rank = {f"source {name}": i for i, name in enumerate(order)}
        children.sort(key=lambda c: rank.get(c["label"], len(rank)))
    duration = span.duration
    return {"label": label, "ms": None if duration is None else round(duration * 1000, 3),
            "info": ", ".join(info), "children": children}


# -- health -----------------------------------------------------------------------------------

class CheckInfo(TypedDict, total=False):
    """One store's check. ``kind``: ``database``, ``cache`` or ``source`` (a fetcher's own
    ``health()``); ``required``: its being down fails the health check (replicas and caches
    are optional); ``lag``: a replica's, in seconds."""

    kind: str
    name: str
    role: str
    ok: bool
    required: bool
    ms: float | None
    detail: str
    lag: float | None


class PipelineHealth(TypedDict):
    name: str
    #: Per fetcher: up, down, or None (nothing to check: in memory, custom).
    sources: dict[str, bool | None]
    ok: bool


class HealthReport(TypedDict):
    checks: list[CheckInfo]
    pipelines: list[PipelineHealth]


def _check(kind: str, name: str, role: str, *, required: bool) -> CheckInfo:
    return {"kind": kind, "name": name, "role": role, "ok": False, "required": required,
            "ms": None, "detail": ""}


class _Targets:
    """What a health check asks: database aliases, cache aliases, and each fetcher's own
    ``health()`` (None from one that has none: its database is checked)."""

    def __init__(self, pipelines: list[Pipeline], topology: bool) -> None:
        self.aliases: dict[str, None] = {}
        if topology:
            self.aliases.update(dict.fromkeys(
                a for a in (datapipe_settings.PRIMARY, *datapipe_settings.REPLICAS,
                            *datapipe_settings.ARCHIVES) if a in connections.settings))
        self.caches: dict[str, None] = {}
        self.hooks: list[tuple[str, Any]] = []
        for pipeline in pipelines:
            for fetcher in pipeline.fetchers:
                self.add(pipeline, fetcher)
        if not self.caches and datapipe_settings.CACHE:
            self.caches[datapipe_settings.CACHE] = None

    def add(self, pipeline: Pipeline, fetcher: Any) -> None:
        using = getattr(fetcher, "using", None)
        if isinstance(using, str):
            self.aliases.setdefault(using, None)
        cache_alias = getattr(fetcher, "cache_alias", None)
        if isinstance(cache_alias, str):
            self.caches.setdefault(cache_alias, None)
        self.hooks.append((f"{pipeline.name}.{fetcher.name}", fetcher))

    def checks(self, timeout: float) -> list[CheckInfo]:
        replicas = list(datapipe_settings.REPLICAS)
        roles = {datapipe_settings.PRIMARY: "primary", **{a: "replica" for a in replicas},
                 **{a: "archive" for a in datapipe_settings.ARCHIVES}}
        found = [_check_database(a, roles.get(a, ""), replica=a in replicas, timeout=timeout)
                 for a in self.aliases]
        found += [_check_cache(a) for a in self.caches]
        found += [c for name, fetcher in self.hooks
                  if (c := _check_hook(name, fetcher)) is not None]
        return found


def _answers(checks: list[CheckInfo], kind: str) -> dict[str, bool]:
    return {c["name"]: c["ok"] for c in checks if c["kind"] == kind}


def _pipeline_health(pipeline: Pipeline, checks: list[CheckInfo]) -> PipelineHealth:
    by_database, by_hook = _answers(checks, "database"), _answers(checks, "source")
    sources: dict[str, bool | None] = {}
    for fetcher in pipeline.fetchers:
        hook_name = f"{pipeline.name}.{fetcher.name}"
        using = getattr(fetcher, "using", None)
        if hook_name in by_hook:
            sources[fetcher.name] = by_hook[hook_name]
        else:  # None: nothing to check (in memory, custom)
            sources[fetcher.name] = by_database.get(using) if isinstance(using, str) else None
    known = [up for up in sources.values() if up is not None]
    return {"name": pipeline.name, "sources": sources, "ok": not known or any(known)}


def health(pipelines: list[Pipeline], *, timeout: float = 3.0,
           topology: bool = True) -> HealthReport:
    """Check every source ``pipelines`` read (and, with ``topology``, the configured primary,
    replicas and archives) and the caches, each within ``timeout`` seconds; say per pipeline
    whether any of its sources can answer. A replica's lag is measured afresh."""
    checks = _Targets(pipelines, topology).checks(timeout)
    return {"checks": checks, "pipelines": [_pipeline_health(p, checks) for p in pipelines]}


def _down(report: HealthReport, *, required: bool) -> list[str]:
    return [c["name"] for c in report["checks"] if not c["ok"] and c["required"] is required]


def health_failures(report: HealthReport, *, strict: bool = False) -> list[str]:
    """What of ``report`` fails a health check, as sentences (empty: healthy): the required
    stores that are down (with ``strict``, the optional ones too) and the pipelines that have
    no source left."""
    down = _down(report, required=True) + (_down(report, required=False) if strict else [])
    failures = ["down: " + ", ".join(down)] if down else []
    empty = [p["name"] for p in report["pipelines"] if not p["ok"]]
    if empty:
        failures.append("pipelines without a source: " + ", ".join(empty))
    return failures


def _replica_lag(check: CheckInfo, alias: str) -> None:
    forget_replica_status(alias)
    status = replica_status(alias)
    check["lag"] = status.lag
    check["ok"] = status.healthy
    lag = "unknown" if status.lag is None else f"{status.lag:.1f} s"
    check["detail"] += f", lag {lag} (max {datapipe_settings.REPLICA_MAX_LAG:g} s)"
    if not status.healthy:
        check["detail"] += f": skipped, {status.reason}"


def _check_database(alias: str, role: str, *, replica: bool, timeout: float) -> CheckInfo:
    check = _check("database", alias, role, required=not replica)
    if alias not in connections.settings:
        check["detail"] = "not in settings.DATABASES"
        return check
    connection = connections[alias]
    start = time.perf_counter()
    try:
        with statement_timeout(connection, timeout), connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except (DatabaseError, ImproperlyConfigured) as exc:
        check["detail"] = f"unreachable: {first_line(exc)}"
        return check
    finally:
        check["ms"] = round((time.perf_counter() - start) * 1000, 3)
    check["ok"] = True
    check["detail"] = connection.display_name
    if replica:
        _replica_lag(check, alias)
    return check


def _check_cache(alias: str) -> CheckInfo:
    from django.conf import settings

    check = _check("cache", alias, "", required=False)
    if alias not in settings.CACHES:
        check["detail"] = "not in settings.CACHES"
        return check
    cache = caches[alias]
    key = f"datapipe:health:{uuid.uuid4().hex}"
    start = time.perf_counter()
    try:
        cache.set(key, "ok", 10)
        answered = cache.get(key)
        cache.delete(key)
    except Exception as exc:  # a cache backend's errors have no common base class
        check["detail"] = f"unreachable: {first_line(exc)}"
        return check
    finally:
        check["ms"] = round((time.perf_counter() - start) * 1000, 3)
    backend = type(cache).__module__ + "." + type(cache).__name__
    check["ok"] = answered == "ok"
    check["detail"] = backend if check["ok"] else f"{backend}: a value set was not read back"
    return check


def _check_hook(name: str, fetcher: Any) -> CheckInfo | None:
    """The source's own ``health()``, or None when it has none (its database is checked)."""
    check = _check("source", name, type(fetcher).__name__, required=True)
    start = time.perf_counter()
    try:
        answer = fetcher.health()
        if answer is None:
            return None
        ok, detail = answer
    except Exception as exc:  # the hook's own failure is the source's
        ok, detail = False, f"unreachable: {first_line(exc)}"
    check["ms"] = round((time.perf_counter() - start) * 1000, 3)
    check["ok"], check["detail"] = bool(ok), str(detail)
    return check


# -- search documents -------------------------------------------------------------------------

class DocumentInfo(TypedDict):
    """A search Document (``datapipe_index list``). ``where``: ``an index`` or the indices an
    alias points to, or why the engine is unreachable (``size`` is then ``None``); ``pending``:
    the rows marked for re-indexing, per database alias that has any."""

    label: str
    flavor: str
    index: str
    where: str
    size: int | None
    model: str
    pending: dict[str, int]


def known_documents() -> list[type[Any]]:
    """Registered Documents (django-elasticsearch-dsl, django-opensearch-dsl) and those the
    registered pipelines search, by label."""
    from datapipe_django.fetchers.search import SearchFetcher
    from datapipe_django.registry import all_pipelines
    from datapipe_django.search.documents import document_label, registered_documents

    found = {document_label(d): d for d in registered_documents()}
    for pipeline in all_pipelines():
        for fetcher in pipeline.fetchers:
            for candidate in (fetcher, fetcher.fetcher):  # a wrapper's too
                if isinstance(candidate, SearchFetcher) and hasattr(candidate.document, "_index"):
                    found.setdefault(document_label(candidate.document), candidate.document)
    return [found[label] for label in sorted(found)]


def _index_state(adapter: Any) -> tuple[str, int | None]:
    try:
        concrete = adapter.aliased_indices(adapter.index)
        size = adapter.count()
    except Exception as exc:
        reason = adapter.unavailable_reason(exc)
        if reason is None:
            raise
        return reason or "", None
    return (f"alias of {', '.join(concrete)}" if concrete else "an index"), size


def _pending(label: str) -> dict[str, int]:
    from datapipe_django.models import PendingIndex

    aliases = [datapipe_settings.PRIMARY, *datapipe_settings.ARCHIVES]
    counts: dict[str, int] = {}
    for alias in (a for a in dict.fromkeys(aliases) if a in connections.settings):
        try:
            count = PendingIndex.objects.using(alias).filter(document=label).count()
        except DatabaseError:
            continue
        if count:
            counts[alias] = count
    return counts


def describe_documents(documents: list[type[Any]] | None = None) -> list[DocumentInfo]:
    """Each Document (default: :func:`known_documents`) with its index, size and pending
    rows."""
    from datapipe_django.search.documents import adapter_for

    described: list[DocumentInfo] = []
    for document in known_documents() if documents is None else documents:
        adapter = adapter_for(document)
        where, size = _index_state(adapter)
        described.append({"label": adapter.label, "flavor": adapter.flavor,
                          "index": adapter.index, "where": where, "size": size,
                          "model": adapter.model._meta.label,
                          "pending": _pending(adapter.label)})
    return described
