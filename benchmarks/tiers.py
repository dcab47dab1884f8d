"""Tiered sources on the real servers: a page inside the hot tier against a hand-written DRF
view on that database, and the example project's deep offset page over HTTP.

    python benchmarks/tiers.py [--rounds 7] [--requests 40] [--http-requests 480]
                               [--concurrency 16]
                               [--against <another checkout, e.g. of main before a change>]

See benchmarks/README.md ("tiers.py") for what is measured and how.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: The code measured (default: this checkout). DATAPIPE_BENCH_CODE=<a checkout of another
#: commit> measures that commit's library and example with these benchmark scripts.
CODE = Path(os.environ.get("DATAPIPE_BENCH_CODE", str(ROOT))).resolve()
sys.path[:0] = [str(ROOT)] + ([str(CODE)] if CODE != ROOT else [])
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.example_settings"

from benchmarks.common import (  # noqa: E402 - after sys.path names the code measured
    fmt,
    interleaved,
    machine,
    round_medians,
    round_ratios,
)

PAYOUTS, MERCHANT, PAGE, DEEP_OFFSET = 20_000, 1, 10, 729
WARMUP = 30
HTTP_PORT = int(os.environ.get("DATAPIPE_BENCH_PORT", "8765"))


# -- databases ---------------------------------------------------------------------------------

def ensure_databases() -> None:
    from benchmarks import example_settings as s
    from benchmarks.common import ensure_postgres_database

    ensure_postgres_database("127.0.0.1", 5432, s.PG_NAME)
    import MySQLdb

    conn = MySQLdb.connect(host="127.0.0.1", port=3306, user="root", passwd="")
    conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS {s.ARCHIVE_NAME} "
                          f"CHARACTER SET utf8mb4")
    conn.close()


def seed() -> None:
    """The demo data (``seed_demo --payouts 20000``) once; then wait for the standby."""
    from django.core.management import call_command

    from example_project.payouts.models import Payout

    try:
        have = Payout.objects.using("archive").count()
    except Exception:
        have = -1
    if have != PAYOUTS:
        call_command("seed_demo", payouts=PAYOUTS, flush=True, verbosity=0)
    want = Payout.objects.using("default").count()
    deadline = time.monotonic() + 60
    while Payout.objects.using("replica").count() != want:
        if time.monotonic() > deadline:
            raise SystemExit("the standby did not catch up with the primary in 60 s")
        time.sleep(0.5)


# -- part 1: a hot-tier page against DRF on that database -------------------------------------

def hot_tier_views() -> tuple[Any, Any, str]:
    """Ours (the example's chain without its cache: primary, standby, archive) and a
    hand-written DRF ListAPIView on the primary; how the primary's tier is declared."""
    import inspect

    from django_filters.rest_framework import DjangoFilterBackend
    from rest_framework.generics import ListAPIView

    from benchmarks.pagination import EnvelopePagination
    from datapipe_django import FallbackMode, Pipeline
    from datapipe_django.fetchers import ORMFetcher
    from datapipe_django.rest import PipelineViewSet
    from example_project.payouts import pipelines as example
    from example_project.payouts.filters import PayoutFilterSet
    from example_project.payouts.models import Payout
    from example_project.payouts.serializers import PayoutSerializer

    ordering = ("-created_at", "-id")
    if "holds" in inspect.signature(ORMFetcher).parameters:
        hot = ORMFetcher("default", name="appdb", holds=example.hot_tier)
        declared = "holds=hot_tier"
    else:  # main before holds existed: the example's hand-written predicate
        hot = ORMFetcher("default", name="appdb", can_handle=example.recent_only)
        declared = "can_handle=recent_only"
    replica = (ORMFetcher("replica") if declared.startswith("holds")
               else ORMFetcher("replica", can_handle=example.recent_only))
    pipeline = Pipeline("bench-tiers", model=Payout, filterset_class=PayoutFilterSet,
                        tenant_field="merchant_id", ordering=ordering,
                        ordering_fields=("created_at", "amount", "id"),
                        fetchers=[hot, replica, ORMFetcher("archive")],
                        fallback=FallbackMode.SEQUENTIAL, timeout=2.0, register=False)

    class Ours(PipelineViewSet):
        serializer_class = PayoutSerializer

        def get_pipeline(self):
            return pipeline

        def get_tenant(self):
            return int(self.request.headers["X-Merchant-Id"])

        def get_auth_type(self):
            return "public"

    class DRF(ListAPIView):
        serializer_class = PayoutSerializer
        filter_backends = [DjangoFilterBackend]
        filterset_class = PayoutFilterSet
        pagination_class = EnvelopePagination

        def get_queryset(self):
            merchant = int(self.request.headers["X-Merchant-Id"])
            return Payout.objects.using("default").filter(merchant_id=merchant).order_by(
                *ordering)

        def get_serializer_context(self):
            return {**super().get_serializer_context(), "expand": frozenset()}

    return Ours.as_view({"get": "list"}), DRF.as_view(), declared


def call(view: Any, params: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    from benchmarks.common import timed_get

    elapsed, response = timed_get(view, params, HTTP_X_MERCHANT_ID=str(MERCHANT))
    return elapsed, json.loads(response.content)


def hot_tier_page(rounds: int, n: int) -> None:
    ours, drf, declared = hot_tier_views()
    cursor = call(ours, {"limit": PAGE, "offset": 90})[1]["next_cursor"]
    cases = [("first page", {"limit": PAGE}, {"limit": PAGE}),
             ("offset=100", {"limit": PAGE, "offset": 100}, {"limit": PAGE, "offset": 100}),
             ("cursor = offset 100", {"limit": PAGE, "cursor": cursor},
              {"limit": PAGE, "offset": 100})]
    for label, a, b in cases:
        x, y = call(ours, a)[1], call(drf, b)[1]
        if [i["id"] for i in x["items"]] != [i["id"] for i in y["items"]]:
            raise SystemExit(f"{label}: ours and DRF disagree")
    sides = {}
    for label, a, b in cases:
        sides[f"{label} ours"] = lambda a=a: call(ours, a)
        sides[f"{label} drf"] = lambda b=b: call(drf, b)
    samples = interleaved(sides, rounds, n, warmup=WARMUP)
    print(f"1. A page inside the hot tier: ours (appdb {declared}, replica, archive; no cache) "
          f"against a DRF ListAPIView on the primary alone; {rounds} rounds x {n} interleaved "
          f"requests each, page {PAGE}, merchant {MERCHANT}.")
    head = f"   {'page':<22} {'ours ms':>18} {'DRF ms':>18} {'ours/DRF':>18}"
    print(head + "\n   " + "-" * (len(head) - 3))
    for label, _, _ in cases:
        x, y = samples[f"{label} ours"], samples[f"{label} drf"]
        print(f"   {label:<22} {fmt(round_medians(x), 1e3):>18} {fmt(round_medians(y), 1e3):>18} "
              f"{fmt(round_ratios(x, y)):>18}")
    print("   (ms: median of the round medians, p10-p90 over rounds; ours/DRF: per round the "
          "median of the per-pair ratios, median and p10-p90 over rounds)")


# -- part 2: the example's deep offset page -----------------------------------------------------

def rows_and_queries() -> list[str]:
    """One request for the deep offset page, in process: rows each source returned, queries
    per database (the example's own pipeline, its cache cleared first and then warm)."""
    from django.core.cache import cache
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    from datapipe_django import PipelineRequest
    from example_project.payouts.pipelines import payouts

    lines = []
    cache.clear()
    for label in ("cold cache", "warm cache"):
        request = PipelineRequest(tenant=MERCHANT, limit=PAGE, offset=DEEP_OFFSET,
                                  auth_type="public")
        captures = {alias: CaptureQueriesContext(connections[alias])
                    for alias in ("default", "replica", "archive")}
        for capture in captures.values():
            capture.__enter__()
        result = payouts.execute(request)
        for capture in captures.values():
            capture.__exit__(None, None, None)
        read = [f"{a.source} {a.count}" + (f" ({a.meta['cache']})" if a.meta.get("cache") else "")
                for a in result.attempts if a.outcome == "ok" and a.reason != "count"]
        counted = [a.source for a in result.attempts if a.reason == "count"]
        total = sum(a.count for a in result.attempts if a.outcome == "ok")
        queries = ", ".join(f"{alias} {len(c.captured_queries)}" for alias, c in captures.items())
        lines.append(f"   {label}: rows read {total} ({'; '.join(read)}"
                     + (f"; count on {', '.join(counted)}" if counted else "")
                     + f"), queries: {queries}; served {len(result.items)} items from "
                       f"{result.source}")
    return lines


def serve(code: Path, port: int) -> subprocess.Popen[bytes]:
    """gunicorn serving the example of checkout ``code`` (with these benchmark settings)."""
    root = ROOT if code == ROOT else _scripts_only()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "benchmarks.example_settings",
           "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(root), str(code)]))}
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "example_project.wsgi:application",
         "--bind", f"127.0.0.1:{port}", "--workers", "2", "--worker-class", "gthread",
         "--threads", "4", "--log-level", "warning", "--chdir", str(root)],
        env=env, cwd=str(root), stderr=subprocess.DEVNULL)
    import requests

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/v1/payouts", timeout=1,
                         headers={"X-Merchant-Id": str(MERCHANT)})
            return process
        except requests.RequestException:
            time.sleep(0.3)
    process.terminate()
    raise SystemExit(f"gunicorn ({code}) did not start")


def _scripts_only() -> Path:
    """A directory holding only these benchmark scripts, so that another checkout's library
    and example are imported with them (its own ``benchmarks`` package would shadow ours)."""
    import shutil
    import tempfile

    target = Path(tempfile.mkdtemp(prefix="datapipe-bench-"))
    shutil.copytree(ROOT / "benchmarks", target / "benchmarks",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return target


def load(port: int, total: int, concurrency: int, params: dict[str, Any]
         ) -> tuple[float, list[float], dict[int, int]]:
    """``total`` requests by ``concurrency`` threads: (seconds, latencies, statuses)."""
    import requests

    url = f"http://127.0.0.1:{port}/v1/payouts"
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    remaining = [total]

    def worker() -> None:
        session = requests.Session()
        while True:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            start = time.perf_counter()
            response = session.get(url, params=params, timeout=10,
                                   headers={"X-Merchant-Id": str(MERCHANT)})
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies, statuses


def rows_of(code: Path) -> list[str]:
    """:func:`rows_and_queries` for checkout ``code`` (in a process of its own)."""
    if code == CODE:
        return rows_and_queries()
    root = _scripts_only()
    env = {**os.environ, "DATAPIPE_BENCH_CODE": str(code)}
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "tiers.py"), "--rows-only"],
                         env=env, cwd=str(root), capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if line.startswith("   ")]


def deep_offset_page(total: int, concurrency: int, against: Path | None,
                     rounds: int = 4) -> None:
    print(f"\n2. The example's GET /v1/payouts?offset={DEEP_OFFSET} (limit {PAGE}, merchant "
          f"{MERCHANT}: a page past the primary's 30 days), the example pipeline as declared "
          f"(cache, appdb, replica, archive).")
    codes = [("this checkout", CODE)] + ([("against", against)] if against else [])
    for label, code in codes:
        print(f"   {label} ({code}):")
        for line in rows_of(code):
            print("  " + line)
    servers = [(label, code, HTTP_PORT + i, serve(code, HTTP_PORT + i))
               for i, (label, code) in enumerate(codes)]
    try:
        cases = [(f"offset={DEEP_OFFSET}", {"offset": DEEP_OFFSET}), ("first page", {})]
        results: dict[tuple[str, str], list[Any]] = {}
        for _, _, port, _ in servers:
            load(port, concurrency * 4, concurrency, cases[0][1])  # warm up
        for r in range(rounds):  # interleaved: each server in turn, the first alternating
            for case, params in cases:
                order = servers if r % 2 == 0 else servers[::-1]
                for label, _, port, _ in order:
                    seconds, latencies, statuses = load(port, total // rounds, concurrency,
                                                        params)
                    entry = results.setdefault((case, label), [[], [], {}])
                    entry[0].append(len(latencies) / seconds)
                    entry[1].extend(latencies)
                    for k, v in statuses.items():
                        entry[2][k] = entry[2].get(k, 0) + v
        print(f"   over HTTP: gunicorn 2 gthread workers x 4 threads each, concurrency "
              f"{concurrency}, {total} requests per page and checkout, interleaved in {rounds} "
              f"rounds")
        head = (f"   {'page':<12} {'checkout':<14} {'req/s':>20} {'p50 ms':>7} {'p99 ms':>7} "
                f"{'max ms':>7}  statuses")
        print(head + "\n   " + "-" * (len(head) - 3))
        for case, _ in cases:
            for label, _, _, _ in servers:
                rates, latencies, statuses = results[case, label]
                q = statistics.quantiles(latencies, n=100, method="inclusive")
                print(f"   {case:<12} {label:<14} {fmt(rates, 1, 1):>20} "
                      f"{q[49] * 1e3:>7.1f} {q[98] * 1e3:>7.1f} {max(latencies) * 1e3:>7.1f}  "
                      f"{statuses}")
        print("   (req/s: median of the rounds, p10-p90 over rounds; latencies over every "
              "request)")
    finally:
        for _, _, _, process in servers:
            process.terminate()
            process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds of part 1 (part 2: 4)")
    parser.add_argument("--requests", type=int, default=40,
                        help="in-process requests per round, page and side (part 1)")
    parser.add_argument("--http-requests", type=int, default=480,
                        help="HTTP requests per page and checkout (part 2)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--against", type=Path, default=None,
                        help="another checkout (e.g. `git worktree add /tmp/before main`) whose "
                             "example is measured beside this one's, interleaved (part 2)")
    parser.add_argument("--skip-hot", action="store_true", help="part 2 only")
    parser.add_argument("--rows-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    ensure_databases()
    import django

    django.setup()
    if args.rows_only:
        for line in rows_and_queries():
            print(line)
        return
    import datapipe_django

    print(f"{machine()}; datapipe_django from {Path(datapipe_django.__file__).parent}")
    seed()
    if not args.skip_hot:
        hot_tier_page(args.rounds, args.requests)
    deep_offset_page(args.http_requests, args.concurrency,
                     args.against.resolve() if args.against else None)


if __name__ == "__main__":
    main()
