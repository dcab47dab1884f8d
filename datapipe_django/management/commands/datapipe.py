"""``manage.py datapipe``: the registered pipelines, the plan of a request, the sources' health.

::

    manage.py datapipe list [--json]
    manage.py datapipe explain <pipeline> "<query string>" [--tenant T] [--auth-type A] [--pk ID]
                                                          [--execute] [--db-plan] [--json]
    manage.py datapipe health [<pipeline> ...] [--timeout S] [--strict] [--json]

``explain`` builds the request the pipeline's viewset would build from the query string, runs
the validate stage and prints, for every fetcher in priority order, whether it would serve the
request and why not, what it would run (the SQL of an ORM fetcher, the query a search fetcher
sends, the cache key...), how the chain would consult them, and the enrichers that would run.
``--execute`` also runs it and prints the tree of stage and source timings and who served it;
what the execution logs is held back and written after the report, on stderr, so the report
stays whole. A retrieve (``--pk``) that no source has is reported as not found, exit status 1.

``health`` checks every database the pipelines read (lag for replicas), the caches, and any
fetcher that reports its own health (``health() -> (ok, detail)``, e.g. a search cluster). It
exits with status 1 when a required source is down: a database that is not a replica, or every
source of a pipeline. Replicas (skipped when behind) and caches (bypassed) are optional unless
``--strict``.

These are diagnostic tools, so they run when system checks fail: the problems are printed
first, on stderr, by their ids (``datapipe_django.E001`` ...). See docs/operations.md.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import sqlparse
from django.core import checks
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections
from django.http import QueryDict
from django.utils.module_loading import autodiscover_modules
from rest_framework.settings import api_settings

from datapipe_django import stages
from datapipe_django.chain import FallbackMode, FetcherChain
from datapipe_django.conf import datapipe_settings
from datapipe_django.errors import PipelineError, ValidationFailed
from datapipe_django.observability import RecordedSpan, RecordingTracer
from datapipe_django.pipeline import Pipeline
from datapipe_django.registry import all_pipelines, get_pipeline
from datapipe_django.replicas import forget_replica_status, replica_status
from datapipe_django.request import PipelineRequest, query_parameters, request_from_query
from datapipe_django.specs import filter_parameters
from datapipe_django.state import State
from datapipe_django.timeouts import statement_timeout


class Command(BaseCommand):
    help = "Registered pipelines (list), the plan of a request (explain), sources' health."
    # Diagnostic tools: they must run when the checks fail (handle() reports them instead).
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,explain,"
                                        "health}")
        listing = actions.add_parser("list", help="The registered pipelines.")
        listing.add_argument("--json", action="store_true", help="Print JSON.")

        explain = actions.add_parser(
            "explain", help="The plan a request would take (and, with --execute, what it did).")
        explain.add_argument("pipeline", help="A registered pipeline's name.")
        explain.add_argument("query", nargs="?", default="",
                             help='The list endpoint\'s query string, e.g. "status=processed&'
                                  'limit=5&expand[]=user".')
        explain.add_argument("--tenant", help="The caller's tenant.")
        explain.add_argument("--auth-type", dest="auth_type", default="public",
                             help="The caller's auth type (default: public, as for an "
                                  "anonymous caller of PipelineViewSet).")
        explain.add_argument("--pk", help="Explain a retrieve of this id instead of a list.")
        explain.add_argument("--execute", action="store_true",
                             help="Run it too: the tree of stage timings and the serving source.")
        explain.add_argument("--db-plan", dest="db_plan", action="store_true",
                             help="Also ask each database for its query plan (EXPLAIN).")
        explain.add_argument("--json", action="store_true", help="Print JSON.")

        health = actions.add_parser("health", help="Whether every source can answer now.")
        health.add_argument("pipelines", nargs="*", help="Only the sources of these pipelines.")
        health.add_argument("--timeout", type=float, default=3.0,
                            help="Seconds each check may take (default 3).")
        health.add_argument("--strict", action="store_true",
                            help="Exit 1 when an optional source (replica, cache) is down too.")
        health.add_argument("--json", action="store_true", help="Print JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        # Pipelines register when their module is imported: import every app's `pipelines`.
        autodiscover_modules("pipelines")
        self.report_checks()
        action = options["action"]
        if action == "list":
            self.list(options)
        elif action == "explain":
            self.explain(options)
        else:
            self.health(options)

    def report_checks(self) -> None:
        """Print the system checks' problems on stderr, as any command would, without
        stopping: the datapipe commands are how one finds out what is wrong."""
        issues = [e for e in checks.run_checks() if not e.is_silenced()]
        if not issues:
            return
        # Above CRITICAL: BaseCommand.check() prints every issue and raises for none.
        self.check(display_num_errors=True, fail_level=checks.CRITICAL + 1)
        serious = sorted({e.id or "?" for e in issues if e.level >= checks.ERROR})
        if serious:
            self.stderr.write(self.style.WARNING(
                f"datapipe runs despite the failing checks ({', '.join(serious)}); what "
                f"follows may show their consequences."))

    # -- output ---------------------------------------------------------------------------------
    def line(self, text: str = "", style: Any = None) -> None:
        self.stdout.write(style(text) if style else text)

    def dump(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, indent=2, default=str))

    # -- list -----------------------------------------------------------------------------------
    def list(self, options: dict[str, Any]) -> None:
        pipelines = [describe_pipeline(p) for p in all_pipelines()]
        if options["json"]:
            self.dump(pipelines)
            return
        if not pipelines:
            self.line("No pipeline is registered. Declare them in an app's pipelines.py.")
        for info in pipelines:
            self.line(f"{info['name']}  {info['model']}  {info['fallback']}  "
                      f"timeout {_seconds(info['timeout'])}", self.style.MIGRATE_HEADING)
            self.line("  fetchers:  " + ", ".join(
                f"{f['name']} ({f['kind']}{' on ' + repr(f['database']) if f['database'] else ''})"
                for f in info["fetchers"]))
            if info["enrichers"]:
                self.line("  enrichers: " + ", ".join(
                    e["name"] + (f" [{', '.join(e['auth_types'])}]" if e["auth_types"] else "")
                    + (" [always]" if e["always"] else "") + (" [required]" if e["required"]
                                                              else "")
                    for e in info["enrichers"]))
            if info["filters"]:  # the query parameters, as a client sends them
                self.line(f"  filters:   {', '.join(info['filters'])}")
            self.line(f"  ordering:  {', '.join(info['ordering'])} (clients may order by "
                      f"{', '.join(info['ordering_fields'])})")
            if info["tenant_field"]:
                self.line(f"  tenant:    {info['tenant_field']}")
            if info["search_fields"]:
                self.line(f"  search:    {', '.join(info['search_fields'])}")

    # -- explain --------------------------------------------------------------------------------
    def explain(self, options: dict[str, Any]) -> None:
        try:
            pipeline = get_pipeline(options["pipeline"])
        except KeyError as exc:
            raise CommandError(exc.args[0]) from None
        request = build_request(pipeline, options["query"], tenant=options["tenant"],
                                auth_type=options["auth_type"], pk=options["pk"])
        plan = explain_plan(pipeline, request, db_plan=options["db_plan"])
        execution = None
        failure: PipelineError | None = None
        logged: list[logging.LogRecord] = []
        if options["execute"] and plan["valid"]:
            with held_logs() as logged:
                execution, failure = execute_traced(pipeline, request)
            execution["log"] = [{"level": r.levelname, "logger": r.name,
                                 "message": r.getMessage()} for r in logged]
        if options["json"]:
            self.dump({**plan, "execution": execution})
        else:
            self.print_plan(plan)
            if execution is not None:
                self.print_execution(execution)
        if logged and not options["json"]:
            self.stderr.write(f"Logged during the execution ({len(logged)} records):")
            for record in logged:
                self.stderr.write(f"  {record.levelname} {record.name} {record.getMessage()}")
        if not plan["valid"]:
            raise CommandError("The request is invalid (see above).", returncode=1)
        if failure is not None:
            raise CommandError(f"The execution failed: {failure.code}: {failure.message}",
                               returncode=1)
        if execution is not None and (execution["result"] or {}).get("found") is False:
            raise CommandError(f"Not found: no source has pk {request.pk!r}"
                               + (f" for tenant {request.tenant!r}." if pipeline.tenant_field
                                  else "."), returncode=1)

    def print_plan(self, plan: dict[str, Any]) -> None:
        head = plan["pipeline"]
        self.line(f"Pipeline {head['name']} ({head['model']}): {head['fallback']}, "
                  f"timeout {_seconds(head['timeout'])}", self.style.MIGRATE_HEADING)
        req = plan["request"]
        what = f"retrieve of pk {req['pk']!r}" if req["pk"] is not None else "list"
        self.line(f"Request: {what}, tenant {req['tenant']!r}, auth type {req['auth_type']!r}")
        if req["filters"]:
            self.line(f"  filters: {req['filters']}")
        if req["search"]:
            self.line(f"  search: {req['search']!r}")
        if not plan["valid"]:
            self.line("Invalid request:", self.style.ERROR)
            for name, messages in plan["errors"].items():
                self.line(f"  {name}: {' '.join(messages)}", self.style.ERROR)
            return
        page = plan["page"]
        self.line(f"  page: limit {page['limit']}, "
                  + (f"cursor after {page['after']}" if page["after"] is not None
                     else f"offset {page['offset']}")
                  + f", ordering {', '.join(page['ordering'])}"
                  + (", highlighted" if page.get("highlight") else "")
                  + (f", facets {', '.join(page['facets'])}" if page.get("facets") else ""))
        self.line(f"  specification: {plan['specification']}")
        if plan["expand"]:
            self.line(f"  expand: {', '.join(plan['expand'])}")
        self.line("")
        self.line("Fetchers, in priority order:", self.style.MIGRATE_HEADING)
        for f in plan["fetchers"]:
            if f["action"] == "declined":
                verdict = self.style.WARNING(f"declines: {f['reason']}")
            elif not f["serves"]:
                verdict = self.style.WARNING(f["verdict"])
            elif f["action"] == "reads":
                verdict = self.style.SUCCESS("serves")
            else:
                verdict = self.style.SUCCESS(f["verdict"])
            self.line(f"  {f['position']}. {f['name']} ({f['kind']}) {verdict}")
            if f.get("holds") and f["holds"] != "every row":
                self.line(f"       holds: {f['holds']}")
            for key, value in f["details"].items():
                if key == "sql" or key.startswith("facet sql"):
                    self.line("       SQL:" if key == "sql" else f"       {key}:")
                    for row in sqlparse.format(value, reindent=True, wrap_after=80).splitlines():
                        self.line(f"         {row}")
                elif key == "query":
                    if isinstance(value, str | bytes):
                        with contextlib.suppress(ValueError):
                            value = json.loads(value)  # a body given as JSON text
                    text = json.dumps(value, indent=2, default=str).replace("\n", "\n       ")
                    self.line(f"       query: {text}")
                elif key == "db_plan":
                    self.line("       database plan:")
                    for row in str(value).splitlines():
                        self.line(f"         {row}")
                else:
                    self.line(f"       {key}: {value}")
        self.line(f"  {plan['strategy']}")
        self.line("")
        self.line("Enrichers:", self.style.MIGRATE_HEADING)
        if not plan["enrichers"]:
            self.line("  (none declared)")
        for e in plan["enrichers"]:
            text = f"  {e['name']} ({e['kind']}): {e['status']}"
            self.line(text, None if e["runs"] else self.style.WARNING)

    def print_execution(self, execution: dict[str, Any]) -> None:
        self.line("")
        self.line("Execution:", self.style.MIGRATE_HEADING)
        for prefix, node in _tree_lines(execution["tree"]):
            duration = f"{node['ms']:8.2f} ms" if node["ms"] is not None else " " * 11
            self.line(f"  {prefix}{node['label']:<{max(1, 34 - len(prefix))}} {duration}  "
                      f"{node['info']}".rstrip())
        result = execution["result"]
        if result is not None and result["found"] is False:
            self.line(f"  not found: no source has pk {result['pk']!r}", self.style.ERROR)
        elif result is not None:
            self.line(f"  served by {result['source'] or 'no source'}: {result['count']} items, "
                      f"has_more {str(result['has_more']).lower()}"
                      + (f", errors {result['errors']}" if result["errors"] else ""))
        else:
            self.line(f"  failed: {execution['error']}", self.style.ERROR)

    # -- health ---------------------------------------------------------------------------------
    def health(self, options: dict[str, Any]) -> None:
        names = options["pipelines"]
        try:
            pipelines = [get_pipeline(n) for n in names] if names else all_pipelines()
        except KeyError as exc:
            raise CommandError(exc.args[0]) from None
        report = check_health(pipelines, timeout=options["timeout"], topology=not names)
        if options["json"]:
            self.dump(report)
        else:
            self.print_health(report)
        required = [c["name"] for c in report["checks"] if not c["ok"] and c["required"]]
        optional = [c["name"] for c in report["checks"] if not c["ok"] and not c["required"]]
        down = [p["name"] for p in report["pipelines"] if not p["ok"]]
        if required or down or (options["strict"] and optional):
            parts = []
            if required or (options["strict"] and optional):
                parts.append("down: " + ", ".join(required + (optional if options["strict"]
                                                              else [])))
            if down:
                parts.append("pipelines without a source: " + ", ".join(down))
            raise CommandError("; ".join(parts), returncode=1)

    def print_health(self, report: dict[str, Any]) -> None:
        sections = {"database": "Databases", "cache": "Caches", "source": "Other sources"}
        for kind, title in sections.items():
            checks = [c for c in report["checks"] if c["kind"] == kind]
            if not checks:
                continue
            self.line(f"{title}:", self.style.MIGRATE_HEADING)
            for c in checks:
                if c["ok"]:
                    status = self.style.SUCCESS("ok")
                elif c["required"]:
                    status = self.style.ERROR("DOWN")
                else:
                    status = self.style.WARNING("down (optional)")
                latency = f"{c['ms']:.1f} ms" if c["ms"] is not None else ""
                role = f" ({c['role']})" if c.get("role") else ""
                self.line(f"  {c['name']}{role}: {status} {latency}  {c['detail']}".rstrip())
        self.line("Pipelines:", self.style.MIGRATE_HEADING)
        for p in report["pipelines"]:
            status = self.style.SUCCESS("ok") if p["ok"] else self.style.ERROR("DOWN")
            self.line(f"  {p['name']}: {status}  " + ", ".join(
                f"{name} {'up' if up else 'down' if up is False else 'unchecked'}"
                for name, up in p["sources"].items()))


# -- building the request -------------------------------------------------------------------------

def build_request(pipeline: Pipeline, query: str, *, tenant: str | None = None,
                  auth_type: str | None = None, pk: str | None = None) -> PipelineRequest:
    """The :class:`PipelineRequest` that ``PipelineViewSet`` builds from ``query`` (a list
    endpoint's query string) for a caller of ``tenant`` and ``auth_type``: the one translation,
    :func:`datapipe_django.request.request_from_query`."""
    tenant_value = _tenant(pipeline, tenant)
    if pipeline.tenant_field and tenant_value is None:
        raise CommandError("No tenant is associated with these credentials. Pass --tenant.")
    url_format = api_settings.URL_FORMAT_OVERRIDE
    parameters = query_parameters(ignored=[url_format] if url_format else [])
    try:
        return request_from_query(
            QueryDict(query.lstrip("?")), parameters, pk=pk, tenant=tenant_value,
            auth_type=auth_type,
            ignore_unknown=datapipe_settings.UNKNOWN_PARAMETERS == "ignore")
    except ValidationFailed as exc:
        raise CommandError("The request is invalid: " + "; ".join(
            f"{name}: {' '.join(messages)}" for name, messages in exc.errors.items())) from None


def _tenant(pipeline: Pipeline, raw: str | None) -> Any:
    """``--tenant`` as the tenant field's Python value (``"1"`` → ``1`` for an integer), converted
    and checked as the validate stage does; a value the field cannot hold is a CommandError."""
    if raw is None or not pipeline.tenant_field:
        return raw
    errors: dict[str, list[str]] = {}
    value = stages.tenant_value(pipeline, raw, errors)
    if errors:
        raise CommandError(f"--tenant {raw!r}: {' '.join(errors['tenant'])}")
    return value


# -- describing ----------------------------------------------------------------------------------

def describe_pipeline(pipeline: Pipeline) -> dict[str, Any]:
    """The declaration of ``pipeline`` as plain data (``datapipe list``)."""
    fs = pipeline.filterset_class
    parameters = filter_parameters(fs) if fs is not None else {}
    return {
        "name": pipeline.name,
        "model": pipeline.model._meta.label,
        "fallback": pipeline.fallback.name,
        "timeout": pipeline.timeout,
        "tenant_field": pipeline.tenant_field,
        "search_fields": list(pipeline.search_fields),
        "ordering": [("-" if f.descending else "") + f.name
                     for f in pipeline.default_ordering.fields],
        "ordering_fields": sorted(pipeline.ordering_fields - {"pk"}),
        # What a client sends: created_at_after and created_at_before for a range filter.
        "filters": sorted(p for ps in parameters.values() for p in ps),
        "filterset": parameters,
        "fetchers": [{"name": f.name, "kind": type(f).__name__,
                      "database": getattr(f, "using", None)} for f in pipeline.fetchers],
        "enrichers": [{"name": e.name, "kind": type(e).__name__,
                       "auth_types": sorted(e.auth_types or ()),
                       "required": bool(e.required), "always": bool(e.always)}
                      for e in pipeline.enrichers],
    }


def describe_fetcher(fetcher: Any, request: Any, *, db_plan: bool = False) -> dict[str, Any]:
    """What ``fetcher`` would run for ``request``: its ``explain(request)`` (an ORM fetcher's
    SQL, a search fetcher's query; a caching wrapper's alias and key, then the wrapped
    fetcher's own explanation)."""
    details: dict[str, Any] = dict(fetcher.explain(request))
    inner = fetcher.fetcher
    build = getattr(fetcher, "build_queryset", None) or getattr(inner, "build_queryset", None)
    if db_plan and callable(build):
        try:
            details["db_plan"] = build(request).explain()
        except DatabaseError as exc:
            details["db_plan"] = f"(unavailable: {_first_line(exc)})"
    return details


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


def _tiered_strategy(pipeline: Pipeline, fetchers: list[dict[str, Any]]) -> str:
    reading = [f["name"] for f in fetchers if f["serves"]]
    if not reading:
        return "No source can serve this request: it would fail with NoFetcher (400)."
    return (f"{pipeline.fallback.name}, planned from what each source holds: "
            f"{', then '.join(reading)}, each asked only for the rows the page still needs "
            f"(an offset past a tier's rows pushed down to the next by its count); a mirror "
            f"or a later source stands in for one that is unavailable.")


def explain_plan(pipeline: Pipeline, request: PipelineRequest, *,
                 db_plan: bool = False) -> dict[str, Any]:
    """The plan of ``request`` as plain data: validation, fetchers and enrichers."""
    timeout = pipeline.timeout
    state = State(pipeline=pipeline, request=request,
                  deadline=time.monotonic() + timeout if timeout is not None else None)
    plan: dict[str, Any] = {
        "pipeline": {"name": pipeline.name, "model": pipeline.model._meta.label,
                     "fallback": pipeline.fallback.name, "timeout": timeout},
        "request": {"pk": request.pk, "tenant": request.tenant, "auth_type": request.auth_type,
                    "filters": {k: (v if len(v) > 1 else v[0])
                                for k, v in _lists(request.filters).items()},
                    "search": request.search},
        "valid": True, "errors": {},
    }
    try:
        stages.validate(state)
    except ValidationFailed as exc:
        plan.update(valid=False, errors=exc.errors)
        return plan
    assert state.ordering is not None
    plan["page"] = {"limit": state.limit, "offset": state.offset, "after": state.after,
                    "ordering": [("-" if f.descending else "") + f.name
                                 for f in state.ordering.fields],
                    "highlight": state.highlight, "facets": list(state.facets)}
    plan["specification"] = (repr(state.spec) if state.spec is not None
                             else f"none: filter {state.uncompilable!r} cannot be compiled")
    plan["expand"] = sorted(state.expand)
    asked = stages.fetch_request(state)
    chain = FetcherChain(pipeline.fetchers, pipeline.fallback)
    verdicts = chain.verdicts(asked)
    candidates = [f for f, v in verdicts if v]
    source_request, skip = chain.source_request(asked, candidates=max(1, len(candidates)),
                                                offset=state.offset, limit=state.limit)
    steps = {step.source: step for step in chain.plan(asked).steps}
    tiered = any(step.action in ("prefix", "skipped") or step.holds != "every row"
                 for step in steps.values() if step.mirror_of is None)
    plan["fetchers"] = []
    for i, (fetcher, verdict) in enumerate(verdicts, 1):
        step = steps.get(fetcher.name)
        reads = bool(verdict) and step is not None and step.action in ("serves", "prefix",
                                                                          "reads")
        asked_here = source_request
        if tiered and reads and step is not None:
            asked_here = replace(asked, offset=state.offset, size=state.limit + 1,
                                 spec=asked.spec if step.region is None or asked.spec is None
                                 else asked.spec & step.region)
        plan["fetchers"].append({
            "position": i, "name": fetcher.name, "kind": type(fetcher).__name__,
            "serves": reads, "reason": verdict.reason if not verdict else
            ("" if reads or step is None else step.verdict),
            "holds": step.holds if step is not None else None,
            "action": step.action if step is not None else "declined",
            "verdict": step.verdict if step is not None else verdict.reason,
            "details": describe_fetcher(fetcher, asked_here, db_plan=db_plan) if reads else {},
        })
    plan["strategy"] = (_tiered_strategy(pipeline, plan["fetchers"]) if tiered
                        else _strategy(pipeline, candidates, source_request, skip, asked.size))
    plan["enrichers"] = _enrichers(pipeline, state)
    return plan


def _enrichers(pipeline: Pipeline, state: State) -> list[dict[str, Any]]:
    auth_type = state.request.auth_type
    selected = {id(e) for e in pipeline.composite_enricher.select(state.expand, auth_type)}
    result = []
    for enricher in pipeline.enrichers:
        runs = id(enricher) in selected
        if runs:
            status = "runs (always)" if enricher.always else \
                "runs (asked for)"
            if enricher.required:
                status += ", required: its failure fails the request"
        elif not enricher.can_enrich(auth_type):
            status = f"not for auth type {auth_type!r}"
        else:
            status = "not asked for"
        result.append({"name": enricher.name, "kind": type(enricher).__name__, "runs": runs,
                       "status": status})
    return result


def _lists(filters: Any) -> dict[str, list[Any]]:
    if hasattr(filters, "lists"):
        return dict(filters.lists())
    return {k: list(v) if isinstance(v, list | tuple) else [v] for k, v in filters.items()}


# -- executing with a recording tracer ------------------------------------------------------------

def execute_traced(pipeline: Pipeline, request: PipelineRequest
                   ) -> tuple[dict[str, Any], PipelineError | None]:
    """Run ``request`` on a copy of ``pipeline`` that records its spans; the span tree and the
    result (or the error) as plain data."""
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
    execution: dict[str, Any] = {
        "tree": _node(roots[0], [f.name for f in pipeline.fetchers]) if roots else None,
        "result": None if result is None else {
            "source": result.source, "count": result.count, "has_more": result.has_more,
            "next_cursor": result.next_cursor, "errors": result.errors,
            # A retrieve: whether a source had the row (None for a list).
            "pk": request.pk, "found": None if request.pk is None else bool(result.items),
            "attempts": [{"source": a.source, "outcome": a.outcome, "reason": a.reason,
                          "rows": a.count, "ms": round(a.duration * 1000, 3)}
                         for a in result.attempts]},
        "error": None if failure is None else f"{failure.code}: {failure.message}",
    }
    return execution, failure


@contextlib.contextmanager
def held_logs() -> Iterator[list[logging.LogRecord]]:
    """Hold back every log record while the block runs (no handler writes it: a console
    handler would write into the report) and give them, in order, to the caller."""
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


def _node(span: RecordedSpan, order: list[str]) -> dict[str, Any]:
    """A span as a tree node; the sources under the fetch stage in priority ``order``."""
    a = span.attributes
    kind, _, name = span.name.removeprefix("datapipe.").partition(".")
    info: list[str] = []
    if span.name == "datapipe.pipeline":
        label = f"{a.get('datapipe.pipeline')} {a.get('datapipe.operation', '')}".strip()
        if "datapipe.sources" in a:
            info.append(f"served by {','.join(a['datapipe.sources']) or 'no source'}, "
                        f"{a.get('datapipe.item_count')} items")
    elif kind == "stage":
        label = name
        if name == "fetch" and "datapipe.fallback" in a:
            info.append(f"fallback: {a['datapipe.fallback.reason']}"
                        if a["datapipe.fallback"] else "no fallback")
    elif kind in ("source", "enricher"):
        label = f"{kind} {name}"
        outcome = a.get("datapipe.outcome") or ("ok" if span.error is None else "failed")
        info.append(str(outcome))
        if "datapipe.item_count" in a:
            info.append(f"{a['datapipe.item_count']} rows")
        if "datapipe.cache" in a:
            info.append(f"cache {a['datapipe.cache']}")
        if a.get("datapipe.reason"):
            info.append(str(a["datapipe.reason"]))
    else:
        label = span.name
    if "error.type" in a:
        info.append(f"error {a['error.type']}")
    children = [_node(c, order) for c in sorted(span.children, key=lambda s: s.start)]
    for event, attributes in span.events:
        if event.startswith("datapipe.source."):
            outcome = event.removeprefix("datapipe.source.")
            children.append({"label": f"source {attributes.get('datapipe.source')}", "ms": None,
                             "info": f"{outcome}: {attributes.get('datapipe.reason', '')}",
                             "children": []})
    if span.name == "datapipe.stage.fetch":
        rank = {f"source {name}": i for i, name in enumerate(order)}
        children.sort(key=lambda c: rank.get(c["label"], len(rank)))
    duration = span.duration
    return {"label": label, "ms": None if duration is None else round(duration * 1000, 3),
            "info": ", ".join(info), "children": children}


def _tree_lines(node: dict[str, Any] | None, prefix: str = "", last: bool = True,
                root: bool = True) -> Iterable[tuple[str, dict[str, Any]]]:
    if node is None:
        return
    yield ("" if root else prefix + ("└─ " if last else "├─ ")), node
    inner = "" if root else prefix + ("   " if last else "│  ")
    for i, child in enumerate(node["children"]):
        yield from _tree_lines(child, inner, i == len(node["children"]) - 1, root=False)


# -- health ----------------------------------------------------------------------------------------

def check_health(pipelines: list[Pipeline], *, timeout: float = 3.0,
                 topology: bool = True) -> dict[str, Any]:
    """Check every source ``pipelines`` read (and, with ``topology``, the configured primary,
    replicas and archives) and the caches; say per pipeline whether any of its sources can
    answer."""
    replicas = list(datapipe_settings.REPLICAS)
    roles = {datapipe_settings.PRIMARY: "primary", **{a: "replica" for a in replicas},
             **{a: "archive" for a in datapipe_settings.ARCHIVES}}
    aliases: dict[str, None] = {}
    if topology:
        aliases.update(dict.fromkeys(
            a for a in (datapipe_settings.PRIMARY, *replicas, *datapipe_settings.ARCHIVES)
            if a in connections.settings))
    cache_aliases: dict[str, None] = {}
    hooks: list[tuple[str, Any]] = []
    for pipeline in pipelines:
        for fetcher in pipeline.fetchers:
            using = getattr(fetcher, "using", None)
            if isinstance(using, str):
                aliases.setdefault(using, None)
            cache_alias = getattr(fetcher, "cache_alias", None)
            if isinstance(cache_alias, str):
                cache_aliases.setdefault(cache_alias, None)
            hooks.append((f"{pipeline.name}.{fetcher.name}", fetcher))
    if not cache_aliases and datapipe_settings.CACHE:
        cache_aliases[datapipe_settings.CACHE] = None
    checks = [_check_database(a, roles.get(a, ""), replica=a in replicas, timeout=timeout)
              for a in aliases]
    checks += [_check_cache(a) for a in cache_aliases]
    checks += [c for name, fetcher in hooks if (c := _check_hook(name, fetcher)) is not None]
    by_database = {c["name"]: c["ok"] for c in checks if c["kind"] == "database"}
    by_hook = {c["name"]: c["ok"] for c in checks if c["kind"] == "source"}
    report_pipelines = []
    for pipeline in pipelines:
        sources: dict[str, bool | None] = {}
        for fetcher in pipeline.fetchers:
            hook_name = f"{pipeline.name}.{fetcher.name}"
            using = getattr(fetcher, "using", None)
            if hook_name in by_hook:
                sources[fetcher.name] = by_hook[hook_name]
            elif isinstance(using, str):
                sources[fetcher.name] = by_database.get(using)
            else:
                sources[fetcher.name] = None  # nothing to check (in memory, custom)
        known = [up for up in sources.values() if up is not None]
        report_pipelines.append({"name": pipeline.name, "sources": sources,
                                 "ok": not known or any(known)})
    return {"checks": checks, "pipelines": report_pipelines}


def _check_database(alias: str, role: str, *, replica: bool, timeout: float) -> dict[str, Any]:
    check: dict[str, Any] = {"kind": "database", "name": alias, "role": role, "ok": False,
                             "required": not replica, "ms": None, "detail": ""}
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
        check["detail"] = f"unreachable: {_first_line(exc)}"
        return check
    finally:
        check["ms"] = round((time.perf_counter() - start) * 1000, 3)
    check["ok"] = True
    check["detail"] = connection.display_name
    if replica:
        forget_replica_status(alias)
        status = replica_status(alias)
        check["lag"] = status.lag
        check["ok"] = status.healthy
        lag = "unknown" if status.lag is None else f"{status.lag:.1f} s"
        check["detail"] += f", lag {lag} (max {datapipe_settings.REPLICA_MAX_LAG:g} s)"
        if not status.healthy:
            check["detail"] += f": skipped, {status.reason}"
    return check


def _check_cache(alias: str) -> dict[str, Any]:
    check: dict[str, Any] = {"kind": "cache", "name": alias, "role": "", "ok": False,
                             "required": False, "ms": None, "detail": ""}
    from django.conf import settings

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
        check["detail"] = f"unreachable: {_first_line(exc)}"
        return check
    finally:
        check["ms"] = round((time.perf_counter() - start) * 1000, 3)
    backend = type(cache).__module__ + "." + type(cache).__name__
    check["ok"] = answered == "ok"
    check["detail"] = backend if check["ok"] else f"{backend}: a value set was not read back"
    return check


def _check_hook(name: str, fetcher: Any) -> dict[str, Any] | None:
    """The source's own ``health()``, or None when it has none (its database is checked)."""
    check: dict[str, Any] = {"kind": "source", "name": name, "role": type(fetcher).__name__,
                             "ok": False, "required": True, "ms": None, "detail": ""}
    start = time.perf_counter()
    try:
        answer = fetcher.health()
        if answer is None:
            return None
        ok, detail = answer
    except Exception as exc:  # the hook's own failure is the source's
        ok, detail = False, f"unreachable: {_first_line(exc)}"
    check["ms"] = round((time.perf_counter() - start) * 1000, 3)
    check["ok"], check["detail"] = bool(ok), str(detail)
    return check


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:g} s"
