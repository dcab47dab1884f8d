"""Memory per request: a page of 100 with three expands, ours against the hand-written view.

    python benchmarks/memory.py [--requests 15] [--rss-rounds 3]

Uses ``benchmarks/http_app.py``'s views and database (``datapipe_bench_http``, created and
seeded if missing): ours (``ExpandableField`` + default ``PrefetchEnricher`` for owner,
category and tags) and DRF (nested serializers + ``select_related``/``prefetch_related``),
called in-process with Django's ``RequestFactory``, rendered. Per request, interleaved: the
tracemalloc peak (the most memory the request's allocations held at once, median of the
requests, p10-p90 beside it, and the median of the per-pair ratios). Then what the requests
add to the resident memory of a fresh process that serves only one side (``--rss-rounds``
processes per side, alternating: median and p10-p90): its peak RSS (``VmHWM``) after
``--requests`` requests less its peak after the set-up and one request, then what as many
requests more add (one-time costs, such as worker threads, land in the first). The set-up
(Django, the seeded database) alone peaks higher than a page does, so a process's bare peak RSS
is the same for both sides and says nothing about them; the growth is what the requests cost.
Goal (issue 14): ours at most 1.2x the hand-written view.
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


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` figure (``VmHWM``: peak RSS, ``VmRSS``: RSS), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss(side: str, n: int) -> tuple[int, int]:
    """What ``n`` requests of ``side`` add to a fresh process's peak RSS (KiB) after its set-up
    and one request, and what ``n`` more add after those."""
    out = subprocess.run([sys.executable, __file__, "--rss-child", side, "--requests", str(n)],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    first, second = out.strip().splitlines()[-1].split()
    return int(first), int(second)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=15)
    parser.add_argument("--rss-rounds", type=int, default=3, help="fresh processes per side")
    parser.add_argument("--rss-child", choices=tuple(PATHS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    views = setup()
    if args.rss_child:
        call(views, args.rss_child)
        marks = [status_kib("VmHWM")]
        for _ in range(2):
            for _ in range(args.requests):
                call(views, args.rss_child)
            marks.append(status_kib("VmHWM"))
        print(marks[1] - marks[0], marks[2] - marks[1])
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
    rss: dict[str, list[tuple[int, int]]] = {side: [] for side in PATHS}
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
    for i, label in enumerate((f"peak RSS growth, first {args.requests}, KiB",
                               f"peak RSS growth, next {args.requests}, KiB")):
        mine, theirs = [r[i] for r in rss["ours"]], [r[i] for r in rss["drf"]]
        ratios_ = [a / b if b else float("nan") for a, b in zip(mine, theirs, strict=True)]
        print(f"{label:<34} {fmt(mine, 1, 0):>20} {fmt(theirs, 1, 0):>20} "
              f"{fmt(ratios_) if all(theirs) else '-':>18}")
    print("(median, p10-p90 over requests (tracemalloc) or processes (RSS); ratio: of each "
          "pair, ours / DRF)")
    ratio = statistics.median(ratios)
    print(f"\nper-request peak ours / DRF = {ratio:.2f} (goal <= 1.2): "
          f"{'met' if ratio <= 1.2 else 'NOT met'}")


if __name__ == "__main__":
    main()
