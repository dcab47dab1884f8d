"""Our list endpoint against the floor: its own SQL through psycopg, rows to dicts, ``json``.

    python benchmarks/floor.py [--rounds 7] [--requests 40] [--pages 10 50 100] [--no-stages]

The floor is what any Python code answering the same page pays at least: the very statement our
endpoint runs (captured from it, parameters included), executed on a plain psycopg connection
(the same ``ClientCursor`` Django uses), each row turned into a dict, the envelope encoded with
the standard ``json`` module. Beside it, in the same interleaved run, our ``PipelineViewSet``
and the hand-written DRF ``ListAPIView`` of ``benchmarks/views.py``. Then one request taken
apart, step by step, and the memory each side allocates per request. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"

from benchmarks import settings as bench_settings
from benchmarks.common import fmt, interleaved, round_ratios, timed, timed_get

TENANT = "t1"
WARMUP = 20
GOALS = {10: 2.5, 50: 2.0}  # ours / floor, at most
DRF_GOAL = (50, 2.0)  # DRF / ours at page 50, at least


# -- the three sides -----------------------------------------------------------------------

def ours_call(view: Any, page: int) -> Callable[[], Any]:
    def run() -> Any:
        return timed_get(view, {"limit": page}, HTTP_X_TENANT=TENANT)[1].content
    return run


def captured_sql(view: Any, page: int) -> tuple[str, Any]:
    """The SELECT our endpoint sends for a page of ``page`` rows, with its parameters."""
    from django.db import connection

    seen: list[tuple[str, Any]] = []

    def record(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        seen.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        timed_get(view, {"limit": page}, HTTP_X_TENANT=TENANT)
    selects = [s for s in seen if s[0].lstrip().upper().startswith("SELECT")]
    if len(selects) != 1:
        raise SystemExit(f"expected one SELECT per page, saw {len(seen)} statements: {seen}")
    return selects[0]


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def floor_call(sql: str, params: Any, page: int) -> Callable[[], bytes]:
    """The floor: one persistent psycopg connection, the statement, dicts, ``json.dumps``."""
    import psycopg

    conn = psycopg.connect(host=bench_settings.PG_HOST, port=bench_settings.PG_PORT,
                           user="postgres", dbname=bench_settings.PG_NAME, autocommit=True,
                           cursor_factory=psycopg.ClientCursor)

    def run() -> bytes:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            names = [column.name for column in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        body = {"entity": "collection", "count": min(len(rows), page),
                "has_more": len(rows) > page, "next_cursor": None, "items": rows[:page]}
        return json.dumps(body, default=_default).encode()

    return run


# -- statistics: benchmarks/common.py (interleaved rounds, median and p10-p90) ------------------

def allocated(fn: Callable[[], Any], n: int = 15) -> list[float]:
    """The peak of traced memory during each of ``n`` calls, bytes."""
    peaks = []
    tracemalloc.start()
    try:
        for _ in range(n):
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            fn()
            peaks.append(tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()
    return peaks


# -- one request, step by step ------------------------------------------------------------

def stage_profile(view_class: Any, page: int, n: int) -> list[tuple[str, list[float]]]:
    """Each step of one request of ours timed on its own, interleaved, ``n`` times:
    [(step, [seconds])]. The last row is the whole request; "view and DRF" is what the whole
    request costs beyond the sum of the steps (dispatch, content negotiation, the spans)."""
    from django.db import connection
    from django.test import RequestFactory

    from datapipe_django import stages
    from datapipe_django.state import State

    pipeline = view_class.pipeline
    fetcher = pipeline.fetchers[0]
    factory = RequestFactory()
    view = view_class.as_view({"get": "list"})

    def drf_view() -> Any:
        request = factory.get("/items", {"limit": page}, HTTP_X_TENANT=TENANT)
        instance = view_class(action="list", format_kwarg=None, args=(), kwargs={})
        instance.action_map = {"get": "list"}
        instance.setup(request)
        drf_request = instance.initialize_request(request)
        instance.request = drf_request
        instance.headers = {}
        instance.initial(drf_request)
        return instance

    instance = drf_view()

    def parse() -> Any:
        return drf_view().get_pipeline_request()

    pipeline_request = parse()

    def fresh_state() -> State:
        return State(pipeline=pipeline, request=pipeline_request, deadline=None)

    def validate() -> State:
        state = fresh_state()
        stages.validate(state)
        return state

    validated = validate()
    asked = stages.fetch_request(validated)

    def build_query() -> Any:
        qs = fetcher.build_queryset(asked)
        return qs.query.get_compiler(using=fetcher.using).as_sql()

    sql, params = build_query()

    def database() -> Any:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    def fetch_stage() -> Any:
        state = fresh_state()
        stages.validate(state)
        stages.fetch(state)
        return state

    def execute() -> Any:
        return pipeline.execute(pipeline_request)

    result = execute()

    def serialize() -> Any:
        return instance.build_response(result).data

    body = serialize()
    renderer = instance.get_renderers()[0]  # what the view answers application/json with

    def render() -> Any:
        return renderer.render(body, "application/json", {})

    def whole() -> Any:
        return timed_get(view, {"limit": page}, HTTP_X_TENANT=TENANT)

    steps: list[tuple[str, Callable[[], Any]]] = [
        ("request parsing (DRF Request, PipelineRequest)", parse),
        ("validate stage (FilterSet, ordering, expand)", validate),
        ("fetch: queryset built and compiled", build_query),
        ("fetch: SQL round trip, rows (cursor)", database),
        ("validate + fetch stages (instances included)", fetch_stage),
        ("pipeline.execute (all stages, spans, metrics)", execute),
        ("serializer (build_response: .data)", serialize),
        (f"renderer (JSON bytes: {type(renderer).__module__.split('.')[0]}'s)", render),
        ("whole request", lambda: whole()[0]),
    ]
    times: dict[str, list[float]] = {label: [] for label, _ in steps}
    for _ in range(n):
        for label, fn in steps:
            if label == "whole request":
                times[label].append(fn())
            else:
                times[label].append(timed(fn))
    rows = [(label, times[label]) for label, _ in steps]
    med = {label: statistics.median(v) for label, v in rows}
    derived = [
        ("  = model instances and chain (fetch stage - validate - query - SQL)",
         med["validate + fetch stages (instances included)"]
         - med["validate stage (FilterSet, ordering, expand)"]
         - med["fetch: queryset built and compiled"] - med["fetch: SQL round trip, rows (cursor)"]),
        ("  = stages' bookkeeping (execute - validate+fetch stages)",
         med["pipeline.execute (all stages, spans, metrics)"]
         - med["validate + fetch stages (instances included)"]),
        ("  = view and DRF (whole - parsing - execute - serializer - renderer)",
         med["whole request"] - med["request parsing (DRF Request, PipelineRequest)"]
         - med["pipeline.execute (all stages, spans, metrics)"]
         - med["serializer (build_response: .data)"] - med[steps[7][0]]),
    ]
    return rows + [(label, [value]) for label, value in derived]


def machine() -> str:
    """CPUs, their model, the load average, Python, PostgreSQL, orjson: what a run ran on."""
    from django.db import connection

    model = ""
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in
                      Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0].split()[0]
    try:
        import orjson
        fast = f"orjson {orjson.__version__}"
    except ImportError:
        fast = "no orjson"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} CPUs ({model}), load average {load}; Python "
            f"{sys.version.split()[0]}, PostgreSQL {server}, {fast}")


# -- main ----------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=40, help="per round, side and page")
    parser.add_argument("--pages", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--no-stages", action="store_true", help="skip the step-by-step table")
    parser.add_argument("--stage-requests", type=int, default=150)
    args = parser.parse_args()

    from benchmarks.list_endpoint import ensure_database, seed

    ensure_database()
    import django

    django.setup()
    seed(nulls_last_index=False)
    from benchmarks.views import OursViewSet, drf_list, ours_list

    sides_by_page: dict[int, dict[str, Callable[[], Any]]] = {}
    for page in args.pages:
        sql, params = captured_sql(ours_list, page)
        ours, drf = ours_call(ours_list, page), ours_call(drf_list, page)
        floor = floor_call(sql, params, page)
        a, b, c = (json.loads(x())["items"] for x in (ours, drf, floor))
        if [r["id"] for r in a] != [r["id"] for r in b] or [r["id"] for r in a] != [
                r["id"] for r in c] or len(a) != page:
            raise SystemExit(f"page {page}: the three sides disagree on the ids")
        sides_by_page[page] = {"ours": ours, "drf": drf, "floor": floor}

    results = {page: interleaved(sides, args.rounds, args.requests, warmup=WARMUP)
               for page, sides in sides_by_page.items()}

    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {machine()}; {args.rounds} rounds x "
          f"{args.requests} interleaved requests per side and page (ours, DRF, floor, ...)")
    print("ms: median of the round medians (p10-p90 over rounds); ratios: median of per-pair "
          "ratios, per round, then over rounds\n")
    head = (f"{'page':>4}  {'ours ms':>20} {'DRF ms':>20} {'floor ms':>20}  "
            f"{'ours/floor':>18} {'DRF/ours':>18}")
    print(head)
    print("-" * len(head))
    verdicts = []
    for page, samples in results.items():
        med = {side: [statistics.median(r) for r in rounds] for side, rounds in samples.items()}
        vs_floor = round_ratios(samples["ours"], samples["floor"])
        vs_drf = round_ratios(samples["drf"], samples["ours"])
        print(f"{page:>4}  {fmt(med['ours'], 1e3):>20} {fmt(med['drf'], 1e3):>20} "
              f"{fmt(med['floor'], 1e3):>20}  {fmt(vs_floor):>18} {fmt(vs_drf):>18}")
        if page in GOALS:
            ratio = statistics.median(vs_floor)
            verdicts.append(f"page {page}: ours/floor {ratio:.2f} (goal <= {GOALS[page]}): "
                            f"{'met' if ratio <= GOALS[page] else 'NOT met'}")
        if page == DRF_GOAL[0]:
            ratio = statistics.median(vs_drf)
            verdicts.append(f"page {page}: DRF/ours {ratio:.2f} (goal >= {DRF_GOAL[1]}): "
                            f"{'met' if ratio >= DRF_GOAL[1] else 'NOT met'}")
    print()
    print("\n".join(verdicts))

    print("\nMemory per request (tracemalloc, peak KiB allocated during one request, median "
          "(p10-p90) of 15 per side; allocations do not depend on the load, so not interleaved)")
    for page, sides in sides_by_page.items():
        peaks = {side: allocated(fn) for side, fn in sides.items()}
        print(f"page {page:>3}: " + ", ".join(f"{side} {fmt(peak, 1 / 1024, 0)}"
                                              for side, peak in peaks.items()))

    if not args.no_stages:
        for page in (p for p in (10, 100) if p in args.pages):
            print(f"\nOne request of ours, step by step, page {page} "
                  f"({args.stage_requests} interleaved repetitions; ms, median (p10-p90))")
            for label, values in stage_profile(OursViewSet, page, args.stage_requests):
                print(f"  {label:<70} {fmt(values, 1e3, 3):>22}")


if __name__ == "__main__":
    main()
