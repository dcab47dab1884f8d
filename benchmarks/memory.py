"""Memory per request: a page of 100 with three expands, ours against the hand-written view.

    python benchmarks/memory.py [--requests 15] [--rss-rounds 3]

Uses ``benchmarks/http_app.py``'s views and database (``datapipe_bench_http``, created and
seeded if missing): ours (``ExpandableField`` + default ``PrefetchEnricher`` for owner,
category and tags) and DRF (nested serializers + ``select_related``/``prefetch_related``),
called in-process with Django's ``RequestFactory``, rendered. Per request, interleaved: the
tracemalloc peak (the most memory the request's allocations held at once, median of the
requests, p10-p90 beside it, and the median of the per-pair ratios). Then the peak RSS of a
fresh process that served only one side's requests (RSS is a high-water mark, so one process
per side), ``--rss-rounds`` processes per side, alternating: median and p10-p90. Goal (issue
14): ours at most 1.2x the hand-written view.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import fmt, machine  # noqa: E402 - after sys.path has the checkout

TENANT, PAGE = "t1", 100
PATHS = {"ours": ("/ours/expand3", {"limit": PAGE, "expand": "owner,category,tags"}),
         "drf": ("/drf/expand3", {"limit": PAGE})}


def setup() -> dict:
    from benchmarks import common

    common.ensure_postgres_database(os.environ.get("DATAPIPE_PG_HOST", "127.0.0.1"),
                                    int(os.environ.get("DATAPIPE_PG_PORT", "5432")),
                                    "datapipe_bench_http")
    from django.urls import resolve

    from benchmarks import http_app

    http_app.seed()
    return {side: resolve(path).func for side, (path, _) in PATHS.items()}


def call(views: dict, side: str) -> bytes:
    from django.test import RequestFactory

    path, params = PATHS[side]
    request = RequestFactory().get(path, params, HTTP_X_TENANT=TENANT)
    response = views[side](request)
    response.render()
    if response.status_code != 200:
        raise SystemExit(f"{side}: HTTP {response.status_code}")
    return bytes(response.content)


def peak_rss(side: str, n: int) -> int:
    """Peak RSS (KiB) of a fresh process after ``n`` requests of ``side``."""
    out = subprocess.run([sys.executable, __file__, "--rss-child", side, "--requests", str(n)],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    return int(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=15)
    parser.add_argument("--rss-rounds", type=int, default=3, help="fresh processes per side")
    parser.add_argument("--rss-child", choices=tuple(PATHS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    views = setup()
    if args.rss_child:
        for _ in range(args.requests):
            call(views, args.rss_child)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        return

    def items(body: bytes) -> str:
        data = json.loads(body)["items"]
        return json.dumps([{**i, "tags": sorted(i["tags"], key=lambda t: t["id"])}
                           for i in data], sort_keys=True)

    if items(call(views, "ours")) != items(call(views, "drf")):
        raise SystemExit("ours and DRF answer different items")
    for _ in range(5):  # warm-up: compiled plans, connections, caches
        call(views, "ours")
        call(views, "drf")
    peaks: dict[str, list[int]] = {"ours": [], "drf": []}
    for r in range(args.requests):
        for side in ("ours", "drf") if r % 2 == 0 else ("drf", "ours"):
            tracemalloc.start()
            call(views, side)
            peaks[side].append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
    rss: dict[str, list[float]] = {side: [] for side in PATHS}
    for r in range(args.rss_rounds):
        for side in tuple(PATHS) if r % 2 == 0 else tuple(PATHS)[::-1]:
            rss[side].append(peak_rss(side, args.requests))
    print(f"{machine()}\npage {PAGE}, expand owner,category,tags; {args.requests} requests per "
          f"side, interleaved; {args.rss_rounds} fresh processes per side for RSS\n")
    head = f"{'':<34} {'ours':>20} {'DRF':>20} {'ratio':>18}"
    print(head)
    print("-" * len(head))
    ratios = [a / b for a, b in zip(peaks["ours"], peaks["drf"], strict=True)]
    print(f"{'tracemalloc peak, KiB':<34} {fmt(peaks['ours'], 1 / 1024, 0):>20} "
          f"{fmt(peaks['drf'], 1 / 1024, 0):>20} {fmt(ratios):>18}")
    rss_ratios = [a / b for a, b in zip(rss["ours"], rss["drf"], strict=True)]
    print(f"{'peak RSS of a fresh process, KiB':<34} {fmt(rss['ours'], 1, 0):>20} "
          f"{fmt(rss['drf'], 1, 0):>20} {fmt(rss_ratios):>18}")
    print("(median, p10-p90 over requests (tracemalloc) or processes (RSS); ratio: of each "
          "pair, ours / DRF)")
    ratio = statistics.median(ratios)
    print(f"\nper-request peak ours / DRF = {ratio:.2f} (goal <= 1.2): "
          f"{'met' if ratio <= 1.2 else 'NOT met'}")


if __name__ == "__main__":
    main()
