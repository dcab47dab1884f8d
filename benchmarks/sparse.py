"""What ``?fields=`` saves and what ``?total=true`` costs, on the real PostgreSQL.

    python benchmarks/sparse.py [--requests 300]

The same list endpoint as list_endpoint.py (``benchmarks/views.py``: one ``ORMFetcher``, 10,000
``Item`` rows in two tenants), each pair of requests run interleaved (A, B, A, B...) after a
warm-up, medians and the ratio B/A printed:

* page of 100, every field, against ``fields=id,amount`` (the query selects 4 columns instead
  of 12, the serializer renders 2 fields instead of 11);
* page of 50 against the same with ``total=true`` (one ``SELECT COUNT(*)`` more).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"

from benchmarks.common import timed_get
from benchmarks.list_endpoint import ROWS, TENANT, ensure_database, seed

WARMUP = 30
PAIRS = [
    ("every field, limit=100", {"limit": 100},
     "fields=id,amount, limit=100", {"limit": 100, "fields": "id,amount"}),
    ("limit=50", {"limit": 50}, "limit=50&total=true", {"limit": 50, "total": "true"}),
    ("status=processed, limit=50", {"limit": 50, "status": "processed"},
     "status=processed, limit=50&total=true",
     {"limit": 50, "status": "processed", "total": "true"}),
]


def measure(view, a: dict, b: dict, n: int) -> tuple[list[float], list[float]]:
    times_a, times_b = [], []
    for _ in range(n):
        times_a.append(timed_get(view, a, HTTP_X_TENANT=TENANT)[0])
        times_b.append(timed_get(view, b, HTTP_X_TENANT=TENANT)[0])
    return times_a, times_b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="per side of each pair")
    args = parser.parse_args()
    ensure_database()
    import django

    django.setup()
    seed(nulls_last_index=False)
    from benchmarks.views import ours_list

    print(f"{ROWS} rows, tenant {TENANT!r}, {args.requests} interleaved requests per side "
          f"after {WARMUP} warm-up\n")
    print(f"{'A':<30} {'median A':>9}   {'B':<40} {'median B':>9}  {'B/A':>5}")
    for label_a, a, label_b, b in PAIRS:
        measure(ours_list, a, b, WARMUP)
        times_a, times_b = measure(ours_list, a, b, args.requests)
        median_a, median_b = statistics.median(times_a), statistics.median(times_b)
        print(f"{label_a:<30} {median_a * 1e3:>7.2f}ms   {label_b:<40} {median_b * 1e3:>7.2f}ms"
              f"  {median_b / median_a:>5.2f}")


if __name__ == "__main__":
    main()
