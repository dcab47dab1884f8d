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
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import sqlparse
from django.core import checks
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.http import QueryDict
from django.utils.module_loading import autodiscover_modules
from rest_framework.settings import api_settings

from datapipe_django import inspect, stages
from datapipe_django.conf import datapipe_settings
from datapipe_django.errors import PipelineError, ValidationFailed
from datapipe_django.pipeline import Pipeline
from datapipe_django.registry import all_pipelines, get_pipeline
from datapipe_django.request import PipelineRequest, query_parameters, request_from_query


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
        {"list": self.list, "explain": self.explain, "health": self.health}[
            options["action"]](options)

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
        pipelines = [inspect.describe(p) for p in all_pipelines()]
        if options["json"]:
            self.dump(pipelines)
            return
        if not pipelines:
            self.line("No pipeline is registered. Declare them in an app's pipelines.py.")
        for info in pipelines:
            self.print_pipeline(info)

    def print_pipeline(self, info: inspect.PipelineInfo) -> None:
        self.line(f"{info['name']}  {info['model']}  {info['fallback']}  "
                  f"timeout {_seconds(info['timeout'])}", self.style.MIGRATE_HEADING)
        self.line("  fetchers:  " + ", ".join(_fetcher_text(f) for f in info["fetchers"]))
        if info["enrichers"]:
            self.line("  enrichers: " + ", ".join(_enricher_text(e) for e in info["enrichers"]))
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
        pipeline = _pipeline(options["pipeline"])
        request = build_request(pipeline, options["query"], tenant=options["tenant"],
                                auth_type=options["auth_type"], pk=options["pk"])
        plan = inspect.explain(pipeline, request, db_plan=options["db_plan"])
        execution: inspect.Execution | None = None
        failure: PipelineError | None = None
        logged: Sequence[logging.LogRecord] = ()
        if options["execute"] and plan["valid"]:
            with inspect.held_logs() as logged:
                execution, failure = inspect.execute(pipeline, request)
            execution["log"] = [{"level": r.levelname, "logger": r.name,
                                 "message": r.getMessage()} for r in logged]
        if options["json"]:
            self.dump({**plan, "execution": execution})
        else:
            self.print_plan(plan)
            self.print_execution(execution)
            self.print_log(logged)
        _explain_outcome(pipeline, request, plan, execution, failure)

    def print_log(self, logged: Sequence[logging.LogRecord]) -> None:
        """What the execution logged, after the report, on stderr."""
        if not logged:
            return
        self.stderr.write(f"Logged during the execution ({len(logged)} records):")
        for record in logged:
            self.stderr.write(f"  {record.levelname} {record.name} {record.getMessage()}")

    def print_plan(self, plan: inspect.Plan) -> None:
        self.print_request(plan)
        if not plan["valid"]:
            self.line("Invalid request:", self.style.ERROR)
            for name, messages in plan["errors"].items():
                self.line(f"  {name}: {' '.join(messages)}", self.style.ERROR)
            return
        self.line(f"  page: {_page_text(plan['page'])}")
        self.line(f"  specification: {plan['specification']}")
        if plan["expand"]:
            self.line(f"  expand: {', '.join(plan['expand'])}")
        self.line("")
        self.line("Fetchers, in priority order:", self.style.MIGRATE_HEADING)
        for f in plan["fetchers"]:
            self.print_fetcher(f)
        self.line(f"  {plan['strategy']}")
        self.line("")
        self.line("Enrichers:", self.style.MIGRATE_HEADING)
        if not plan["enrichers"]:
            self.line("  (none declared)")
        for e in plan["enrichers"]:
            text = f"  {e['name']} ({e['kind']}): {e['status']}"
            self.line(text, None if e["runs"] else self.style.WARNING)

    def print_request(self, plan: inspect.Plan) -> None:
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

    def verdict(self, f: inspect.FetcherPlan) -> str:
        if f["action"] == "declined":
            return str(self.style.WARNING(f"declines: {f['reason']}"))
        if not f["serves"]:
            return str(self.style.WARNING(f["verdict"]))
        return str(self.style.SUCCESS("serves" if f["action"] == "reads" else f["verdict"]))

    def print_fetcher(self, f: inspect.FetcherPlan) -> None:
        self.line(f"  {f['position']}. {f['name']} ({f['kind']}) {self.verdict(f)}")
        if f.get("holds") and f["holds"] != "every row":
            self.line(f"       holds: {f['holds']}")
        for key, value in f["details"].items():
            for text in _detail_lines(key, value):
                self.line(text)

    def print_execution(self, execution: inspect.Execution | None) -> None:
        if execution is None:
            return
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
        pipelines = [_pipeline(n) for n in names] if names else all_pipelines()
        report = inspect.health(pipelines, timeout=options["timeout"], topology=not names)
        if options["json"]:
            self.dump(report)
        else:
            self.print_health(report)
        failures = inspect.health_failures(report, strict=options["strict"])
        if failures:
            raise CommandError("; ".join(failures), returncode=1)

    def status(self, check: inspect.CheckInfo) -> str:
        if check["ok"]:
            return str(self.style.SUCCESS("ok"))
        if check["required"]:
            return str(self.style.ERROR("DOWN"))
        return str(self.style.WARNING("down (optional)"))

    def print_checks(self, title: str, found: Sequence[inspect.CheckInfo]) -> None:
        if found:
            self.line(f"{title}:", self.style.MIGRATE_HEADING)
        for c in found:
            latency = f"{c['ms']:.1f} ms" if c["ms"] is not None else ""
            role = f" ({c['role']})" if c.get("role") else ""
            self.line(f"  {c['name']}{role}: {self.status(c)} {latency}  "
                      f"{c['detail']}".rstrip())

    def print_health(self, report: inspect.HealthReport) -> None:
        for kind, title in _SECTIONS.items():
            self.print_checks(title, [c for c in report["checks"] if c["kind"] == kind])
        self.line("Pipelines:", self.style.MIGRATE_HEADING)
        for p in report["pipelines"]:
            status = self.style.SUCCESS("ok") if p["ok"] else self.style.ERROR("DOWN")
            self.line(f"  {p['name']}: {status}  " + ", ".join(
                f"{name} {_UP[up]}" for name, up in p["sources"].items()))


_SECTIONS = {"database": "Databases", "cache": "Caches", "source": "Other sources"}
_UP = {True: "up", False: "down", None: "unchecked"}


def _pipeline(name: str) -> Pipeline:
    try:
        return get_pipeline(name)
    except KeyError as exc:
        raise CommandError(exc.args[0]) from None


def _explain_outcome(pipeline: Pipeline, request: PipelineRequest, plan: inspect.Plan,
                     execution: inspect.Execution | None,
                     failure: PipelineError | None) -> None:
    """Exit status 1 for an invalid request, a failed execution, a retrieve not found."""
    if not plan["valid"]:
        raise CommandError("The request is invalid (see above).", returncode=1)
    if failure is not None:
        raise CommandError(f"The execution failed: {failure.code}: {failure.message}",
                           returncode=1)
    if execution is not None and (execution["result"] or {}).get("found") is False:
        raise CommandError(f"Not found: no source has pk {request.pk!r}"
                           + (f" for tenant {request.tenant!r}." if pipeline.tenant_field
                              else "."), returncode=1)


# -- printing -------------------------------------------------------------------------------------

def _fetcher_text(f: inspect.FetcherInfo) -> str:
    return f"{f['name']} ({f['kind']}{' on ' + repr(f['database']) if f['database'] else ''})"


def _enricher_text(e: inspect.EnricherInfo) -> str:
    return (e["name"] + (f" [{', '.join(e['auth_types'])}]" if e["auth_types"] else "")
            + (" [always]" if e["always"] else "") + (" [required]" if e["required"] else ""))


def _page_text(page: dict[str, Any]) -> str:
    return (f"limit {page['limit']}, "
            + (f"cursor after {page['after']}" if page["after"] is not None
               else f"offset {page['offset']}")
            + f", ordering {', '.join(page['ordering'])}"
            + (", highlighted" if page.get("highlight") else "")
            + (f", facets {', '.join(page['facets'])}" if page.get("facets") else ""))


def _sql_lines(key: str, value: Any) -> list[str]:
    rows = sqlparse.format(value, reindent=True, wrap_after=80).splitlines()
    return ["       SQL:" if key == "sql" else f"       {key}:",
            *(f"         {row}" for row in rows)]


def _query_lines(key: str, value: Any) -> list[str]:
    if isinstance(value, str | bytes):
        with contextlib.suppress(ValueError):
            value = json.loads(value)  # a body given as JSON text
    text = json.dumps(value, indent=2, default=str).replace("\n", "\n       ")
    return [f"       query: {text}"]


def _db_plan_lines(key: str, value: Any) -> list[str]:
    return ["       database plan:", *(f"         {row}" for row in str(value).splitlines())]


#: How a fetcher's detail prints, by its key (any other: ``key: value``).
_DETAILS = {"sql": _sql_lines, "query": _query_lines, "db_plan": _db_plan_lines}


def _detail_lines(key: str, value: Any) -> list[str]:
    printer = _DETAILS.get("sql" if key.startswith("facet sql") else key)
    return printer(key, value) if printer is not None else [f"       {key}: {value}"]


def _tree_lines(node: inspect.SpanNode | None, prefix: str = "", last: bool = True,
                root: bool = True) -> Iterable[tuple[str, inspect.SpanNode]]:
    if node is None:
        return
    yield ("" if root else prefix + ("└─ " if last else "├─ ")), node
    inner = "" if root else prefix + ("   " if last else "│  ")
    for i, child in enumerate(node["children"]):
        yield from _tree_lines(child, inner, i == len(node["children"]) - 1, root=False)


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:g} s"


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
