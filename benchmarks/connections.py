"""Connection cost per request: a new PostgreSQL connection each time (``CONN_MAX_AGE=0``,
Django's default) against psycopg 3's pool (``OPTIONS={"pool": ...}``).

Each iteration does what a request (or a worker thread of a parallel fetch) does: one query,
then Django closes the connection at the end (with the pool, ``close()`` returns it).

    python benchmarks/connections.py [--rounds 7] [--iterations 40]

The two run interleaved (new, pooled, new, pooled...; which goes first alternates by round);
each figure is the median of its rounds' medians with the p10-p90 over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import django
from django.conf import settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import fmt, interleaved, machine, pooled, round_medians, round_ratios

BASE = {"ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1", "PORT": 5432,
        "NAME": "postgres", "USER": "postgres", "PASSWORD": ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=40, help="per round and side")
    args = parser.parse_args()
    settings.configure(DATABASES={
        "default": BASE,
        "pooled": {**BASE, "OPTIONS": {"pool": {"min_size": 2, "max_size": 4}}},
    }, USE_TZ=True)
    django.setup()
    from django.db import connections

    def query(alias: str) -> None:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        connections[alias].close()

    samples = interleaved({"default": lambda: query("default"),
                           "pooled": lambda: query("pooled")},
                          args.rounds, args.iterations, warmup=5)
    print(f"{machine()}; {args.rounds} rounds x {args.iterations} interleaved connections + "
          f"queries per side\n")
    print(f"{'connection':<18}{'ms':>22}{'p99 ms':>9}{'x pooled':>21}")
    ratios = round_ratios(samples["default"], samples["pooled"])
    for alias, label in (("default", "new per request"), ("pooled", "psycopg pool")):
        every = sorted(pooled(samples[alias]))
        p99 = statistics.quantiles(every, n=100, method="inclusive")[98]
        vs = fmt(ratios) if alias == "default" else ""
        print(f"{label:<18}{fmt(round_medians(samples[alias]), 1e3, 3):>22}{p99 * 1e3:>9.3f}"
              f"{vs:>21}")
    print("\n(ms: median of the round medians, p10-p90 over rounds; p99 over every sample; "
          "x pooled: per round the median of the per-pair ratios, median and p10-p90 over "
          "rounds)")


if __name__ == "__main__":
    main()
