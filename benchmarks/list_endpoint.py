"""Our list endpoint against a hand-written DRF ``ListAPIView``, on the real PostgreSQL.

    python benchmarks/list_endpoint.py [--rounds 7] [--requests 40] [--profile 200]

See benchmarks/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"

from benchmarks import settings as bench_settings
from benchmarks.common import (
    ensure_postgres_database,
    fmt,
    interleaved,
    machine,
    percentile,
    pooled,
    round_medians,
    round_ratios,
    seed_items,
    timed_get,
)

ROWS, TENANTS, TENANT, PAGE = 10_000, ("t1", "t2"), "t1", 50
WARMUP = 30


def ensure_database() -> None:
    """Create the benchmark database if missing; exit with a hint when PostgreSQL is down."""
    ensure_postgres_database(bench_settings.PG_HOST, bench_settings.PG_PORT,
                             bench_settings.PG_NAME)


def seed(nulls_last_index: bool) -> None:
    """The Item table with ROWS rows (two tenants) and an index on (tenant, created_at, id);
    with ``nulls_last_index``, also one in the exact order of our ORDER BY (NULLS LAST)."""
    from django.db import connection

    from tests.testapp.models import Item

    seed_items(ROWS, TENANTS)
    table = Item._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE INDEX IF NOT EXISTS bench_item_tenant_created_id "
                       f"ON {table} (tenant, created_at, id)")
        if nulls_last_index:
            cursor.execute(f"CREATE INDEX IF NOT EXISTS bench_item_nulls_last ON {table} "
                           f"(tenant, created_at DESC NULLS LAST, id DESC NULLS LAST)")
        else:
            cursor.execute("DROP INDEX IF EXISTS bench_item_nulls_last")
        cursor.execute(f"ANALYZE {table}")


def call(view, params: dict) -> tuple[float, dict]:
    """One request through ``view``, rendered; (seconds, decoded body)."""
    elapsed, response = timed_get(view, params, HTTP_X_TENANT=TENANT)
    return elapsed, json.loads(response.content)


def scenarios(ours) -> list[tuple[str, dict, dict]]:
    """(label, our parameters, DRF parameters). The cursor page holds the rows of offset=500."""
    cursor = call(ours, {"limit": PAGE, "offset": 500 - PAGE})[1]["next_cursor"]
    return [
        ("first page", {"limit": PAGE}, {"limit": PAGE}),
        ("status=processed", {"limit": PAGE, "status": "processed"},
         {"limit": PAGE, "status": "processed"}),
        ("offset=500", {"limit": PAGE, "offset": 500}, {"limit": PAGE, "offset": 500}),
        ("cursor (ours) vs offset=500 (DRF)", {"limit": PAGE, "cursor": cursor},
         {"limit": PAGE, "offset": 500}),
    ]


def check_same_pages(ours, drf, cases) -> None:
    for label, ours_params, drf_params in cases:
        a, b = call(ours, ours_params)[1], call(drf, drf_params)[1]
        ids_a, ids_b = [i["id"] for i in a["items"]], [i["id"] for i in b["items"]]
        if ids_a != ids_b or a["has_more"] != b["has_more"] or len(ids_a) != PAGE:
            raise SystemExit(f"{label}: the two endpoints disagree: {ids_a[:5]} vs {ids_b[:5]}")


def measure(ours, drf, cases, rounds: int, n: int) -> dict[str, list[list[float]]]:
    """``rounds`` rounds of ``n`` requests per scenario and side, interleaved (ours, DRF,
    ours, DRF..., every scenario in turn): ``{"<scenario> ours"|"<scenario> drf": rounds}``."""
    sides = {}
    for label, ours_params, drf_params in cases:
        sides[f"{label} ours"] = lambda p=ours_params: call(ours, p)
        sides[f"{label} drf"] = lambda p=drf_params: call(drf, p)
    return interleaved(sides, rounds, n, warmup=WARMUP)


def print_table(cases, samples) -> float:
    """Print the table; return the worst median ratio."""
    head = (f"{'scenario':<34} {'ours ms':>18} {'DRF ms':>18} {'ours/DRF':>18} "
            f"{'p99 ours/DRF':>13}")
    print(head)
    print("-" * len(head))
    worst = 0.0
    for label, _, _ in cases:
        a, b = samples[f"{label} ours"], samples[f"{label} drf"]
        ratios = round_ratios(a, b)
        worst = max(worst, statistics.median(ratios))
        p99 = percentile(pooled(a), 99) / percentile(pooled(b), 99)
        print(f"{label:<34} {fmt(round_medians(a), 1e3):>18} {fmt(round_medians(b), 1e3):>18} "
              f"{fmt(ratios):>18} {p99:>13.2f}")
    print("(ms: median of the round medians (p10-p90 over rounds); ours/DRF: per round the "
          "median of the per-pair ratios, then median (p10-p90) over rounds; p99 over every "
          "request; the cursor row compares our cursor page with DRF's offset page of the "
          "same rows)")
    return worst


def print_plans(ours, drf, cases) -> None:
    """EXPLAIN ANALYZE of the query each endpoint runs for the first page."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for name, view, params in (("ours", ours, cases[0][1]), ("DRF", drf, cases[0][2])):
        with CaptureQueriesContext(connection) as captured:
            call(view, params)
        sql = captured.captured_queries[-1]["sql"]
        if sql.startswith("SET LOCAL statement_timeout"):  # the deadline's, sent with the query
            sql = sql.split("; ", 1)[1]
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF, SUMMARY OFF) {sql}")
            plan = [row[0] for row in cursor.fetchall()]
        print(f"{name}: ORDER BY {sql.rsplit('ORDER BY', 1)[-1].strip()}")
        print("\n".join(f"    {line}" for line in plan))


def profile(ours, cases, n: int, top: int = 15) -> None:
    """cProfile ``n`` requests of ours; the top cumulative entries inside datapipe_django."""
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(n):
        call(ours, cases[i % len(cases)][1])
    profiler.disable()
    entries = [(key, value) for key, value in pstats.Stats(profiler).stats.items()
               if "datapipe_django" in key[0]]
    entries.sort(key=lambda e: e[1][3], reverse=True)
    own_total = sum(value[2] for _, value in entries)
    print(f"own time of all datapipe_django functions: {own_total * 1e3 / n:.3f} ms/request")
    print(f"{'cum ms/req':>10} {'own ms/req':>10} {'calls/req':>9}  function")
    for (filename, line, func), (_, calls, own, cum, _) in entries[:top]:
        where = filename.split("datapipe_django/", 1)[-1]
        print(f"{cum * 1e3 / n:>10.3f} {own * 1e3 / n:>10.3f} {calls / n:>9.1f}  "
              f"{func} ({where}:{line})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=40,
                        help="per round, scenario and side")
    parser.add_argument("--profile", type=int, default=200,
                        help="requests of ours profiled (0: no profile)")
    parser.add_argument("--nulls-last-index", action="store_true",
                        help="also index (tenant, created_at DESC NULLS LAST, id DESC NULLS LAST), "
                             "the order our SQL asks for, to leave only the Python overhead")
    args = parser.parse_args()

    ensure_database()
    import django

    django.setup()
    seed(args.nulls_last_index)
    from benchmarks.views import drf_list, ours_list

    cases = scenarios(ours_list)
    check_same_pages(ours_list, drf_list, cases)
    samples = measure(ours_list, drf_list, cases, args.rounds, args.requests)
    print(machine())
    index = " + (tenant, created_at DESC NULLS LAST, id DESC NULLS LAST)" * args.nulls_last_index
    print(f"{ROWS} rows, tenant {TENANT!r} ({ROWS // len(TENANTS)} rows), page {PAGE}, "
          f"{args.rounds} rounds x {args.requests} interleaved requests per scenario and side, "
          f"after {WARMUP} warm-up; "
          f"indexes: (tenant, created_at, id){index}\n")
    worst = print_table(cases, samples)
    print("\nQuery plans, first page:")
    print_plans(ours_list, drf_list, cases)
    if worst > 1.05 and args.profile > 0:
        print(f"\nWhere our time goes ({args.profile} requests of ours under cProfile, "
              f"entries inside datapipe_django, by cumulative time):")
        profile(ours_list, cases, args.profile)


if __name__ == "__main__":
    main()
