"""Connection cost per request: a new PostgreSQL connection each time (``CONN_MAX_AGE=0``,
Django's default) against psycopg 3's pool (``OPTIONS={"pool": ...}``).

Each iteration does what a request (or a worker thread of a parallel fetch) does: one query,
then Django closes the connection at the end (with the pool, ``close()`` returns it).

    python benchmarks/connections.py [--iterations 300]
"""

from __future__ import annotations

import argparse
import statistics
import time

import django
from django.conf import settings

BASE = {"ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1", "PORT": 5432,
        "NAME": "postgres", "USER": "postgres", "PASSWORD": ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    settings.configure(DATABASES={
        "default": BASE,
        "pooled": {**BASE, "OPTIONS": {"pool": {"min_size": 2, "max_size": 4}}},
    }, USE_TZ=True)
    django.setup()
    from django.db import connections

    def run(alias: str) -> list[float]:
        samples = []
        for _ in range(args.iterations):
            start = time.perf_counter()
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
            connections[alias].close()
            samples.append((time.perf_counter() - start) * 1000)
        return samples

    run("pooled")  # opens the pool
    results = {alias: run(alias) for alias in ("default", "pooled")}
    print(f"{'connection':<22}{'median ms':>10}{'p99 ms':>10}")
    for alias, label in (("default", "new per request"), ("pooled", "psycopg pool")):
        samples = sorted(results[alias])
        p99 = samples[int(len(samples) * 0.99) - 1]
        print(f"{label:<22}{statistics.median(samples):>10.3f}{p99:>10.3f}")


if __name__ == "__main__":
    main()
