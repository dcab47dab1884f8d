"""What ``?fields=`` saves and what ``?total=true`` costs, on the real PostgreSQL.

    python benchmarks/sparse.py [--rounds 7] [--requests 40]

The same list endpoint as list_endpoint.py (``benchmarks/views.py``: one ``ORMFetcher``, 10,000
``Item`` rows in two tenants), each pair of requests run interleaved (A, B, A, B...; which goes
first alternates by round) in ``--rounds`` rounds after a warm-up; printed: the median of the
round medians of each (p10-p90 over rounds) and the ratio B/A (per round the median of the
per-pair ratios, then median and p10-p90 over rounds):

* page of 100, every field, against ``fields=id,amount`` (the query selects 4 columns instead
  of 12, the serializer renders 2 fields instead of 11);
* page of 50 against the same with ``total=true`` (one ``SELECT COUNT(*)`` more).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"

from benchmarks.common import fmt, interleaved, machine, round_medians, round_ratios, timed_get
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=40, help="per round and side")
    args = parser.parse_args()
    ensure_database()
    import django

    django.setup()
    seed(nulls_last_index=False)
    from benchmarks.views import ours_list

    def side(params: dict) -> Callable[[], object]:
        return lambda: timed_get(ours_list, params, HTTP_X_TENANT=TENANT)

    print(f"{machine()}\n{ROWS} rows, tenant {TENANT!r}, {args.rounds} rounds x "
          f"{args.requests} interleaved requests per side after {WARMUP} warm-up\n")
    print(f"{'A':<30} {'A ms':>18}   {'B':<40} {'B ms':>18} {'B/A':>17}")
    for label_a, a, label_b, b in PAIRS:
        samples = interleaved({"a": side(a), "b": side(b)}, args.rounds, args.requests,
                              warmup=WARMUP)
        print(f"{label_a:<30} {fmt(round_medians(samples['a']), 1e3):>18}   {label_b:<40} "
              f"{fmt(round_medians(samples['b']), 1e3):>18} "
              f"{fmt(round_ratios(samples['b'], samples['a'])):>17}")
    print("\n(ms: median of the round medians, p10-p90 over rounds; B/A: per round the median "
          "of the per-pair ratios, median and p10-p90 over rounds)")


if __name__ == "__main__":
    main()
