"""A cache hit (CachedFetcher on the real Redis) against the same request from PostgreSQL.

    python benchmarks/cache.py [--requests 500] [--page 10 --page 50]

Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (``bash scripts/services.sh
start``). It creates the database ``datapipe_bench_cache`` if missing, the ``tests.testapp``
tables and 10,000 ``Item`` rows in two tenants with an index on ``(tenant, created_at, id)``,
and uses Redis database 4 through django-redis with its default settings.

Two pipelines answer the same requests (tenant ``t1``, ``status=processed``, newest first):
``db`` reads PostgreSQL with an ``ORMFetcher``; ``cache`` wraps the same fetcher in a
``CachedFetcher`` and is warmed, so each of its requests is a hit. Per page size it measures,
interleaved (db, cache, db, cache...):

* ``fetch``: the fetch alone, ``fetcher.fetch(request)``: SQL + model instances against
  Redis ``MGET`` + JSON + ``Model.from_db`` (the goal: a hit at most 0.2x the DB fetch);
* ``execute``: the whole ``pipeline.execute()`` (validation, FilterSet, chain, cursor).

and prints the median and p99 of each and the ratio cache / db. It measures twice: with the
hit and the PostgreSQL fetch interleaved (db, cache, db, cache...: both see the same load), and
back to back (every db request, then every cache request: each side has the CPU caches, the
connection and the server to itself). ``--order`` picks one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common
from benchmarks.common import HINT, ensure_postgres_database, first_line, seed_items

PG_HOST = os.environ.get("DATAPIPE_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("DATAPIPE_PG_PORT", "5432"))
PG_NAME = "datapipe_bench_cache"
REDIS_URL = os.environ.get("DATAPIPE_BENCH_REDIS", "redis://127.0.0.1:6379/4")
ROWS, TENANTS, TENANT = 10_000, ("t1", "t2"), "t1"
WARMUP = 50


def configure() -> None:
    common.configure(
        DATABASES={"default": {
            "ENGINE": "django.db.backends.postgresql", "HOST": PG_HOST, "PORT": PG_PORT,
            "NAME": PG_NAME, "USER": "postgres", "PASSWORD": "", "CONN_MAX_AGE": None,
        }},
        CACHES={"default": {
            "BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_URL,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2},  # a busy machine
        }},
        DATAPIPE={"PRIMARY": "default", "MAX_LIMIT": 100, "CACHE_KEY_PREFIX": "bench"},
    )


def ensure_servers() -> None:
    """Create the benchmark database if missing; exit with a hint when a server is down."""
    import redis

    ensure_postgres_database(PG_HOST, PG_PORT, PG_NAME)
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        sys.exit(f"Redis is not reachable at {REDIS_URL} ({first_line(exc)}); {HINT}")


def seed() -> None:
    from django.db import connection

    from datapipe_django import invalidate
    from tests.testapp.models import Item

    if seed_items(ROWS, TENANTS):
        invalidate(Item)  # bulk_create sends no signal
    table = Item._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE INDEX IF NOT EXISTS bench_cache_tenant_created_id "
                       f"ON {table} (tenant, created_at, id)")
        cursor.execute(f"ANALYZE {table}")


def pipelines() -> tuple[Any, Any]:
    from datapipe_django import Pipeline
    from datapipe_django.fetchers import CachedFetcher, ORMFetcher
    from tests.testapp.filters import ItemFilterSet
    from tests.testapp.models import Item

    common = dict(model=Item, filterset_class=ItemFilterSet, tenant_field="tenant",
                  ordering=("-created_at", "-id"), register=False, timeout=None)
    db = Pipeline("bench-db", fetchers=[ORMFetcher("default", name="primary")], **common)
    cached = Pipeline("bench-cache", **common, fetchers=[
        CachedFetcher(ORMFetcher("default", name="primary"), ttl=3600)])
    return db, cached


def fetch_request(pipeline: Any, page: int) -> Any:
    """The FetchRequest the pipeline's fetch stage builds for the benchmark's request."""
    captured: list[Any] = []
    fetcher = pipeline.fetchers[0]
    original = fetcher.fetch
    fetcher.fetch = lambda request: captured.append(request) or original(request)
    try:
        pipeline.execute(**request_kwargs(page))
    finally:
        del fetcher.fetch
    return captured[0]


def request_kwargs(page: int) -> dict[str, Any]:
    return {"tenant": TENANT, "filters": {"status": "processed"}, "limit": page}


def measure(db: Any, cached: Any, page: int, n: int, order: str) -> dict[str, list[float]]:
    db_request, cache_request = fetch_request(db, page), fetch_request(cached, page)
    db_fetcher, cache_fetcher = db.fetchers[0], cached.fetchers[0]
    kwargs = request_kwargs(page)
    calls = {
        "fetch db": lambda: db_fetcher.fetch(db_request),
        "fetch cache": lambda: cache_fetcher.fetch(cache_request),
        "execute db": lambda: db.execute(**kwargs),
        "execute cache": lambda: cached.execute(**kwargs),
    }
    expected = [row.pk for row in calls["fetch db"]().items]
    for name, call in calls.items():  # same rows, and the cache side really hits
        result = call()
        items = result.items
        if [row.pk for row in items][: len(expected)] != expected[: len(items)]:
            raise SystemExit(f"page {page}: {name} returned other rows")
        meta = result.attempts[0].meta if hasattr(result, "attempts") else result.meta
        if "cache" in name and meta.get("cache") != "hit":
            raise SystemExit(f"page {page}: {name} did not hit the cache: {meta}")
    misses = cache_fetcher.stats["misses"]
    samples: dict[str, list[float]] = {name: [] for name in calls}
    if order == "interleaved":
        rounds = [list(calls.items())] * (WARMUP + n)
    else:  # back to back: each call n times in a row (after its own warm-up)
        rounds = [[(name, call)] for name, call in calls.items() for _ in range(WARMUP + n)]
    seen: dict[str, int] = dict.fromkeys(calls, 0)
    for group in rounds:
        for name, call in group:
            start = time.perf_counter()
            call()
            elapsed = time.perf_counter() - start
            seen[name] += 1
            if seen[name] > WARMUP:
                samples[name].append(elapsed)
    if cache_fetcher.stats["misses"] != misses or cache_fetcher.stats["bypasses"]:
        raise SystemExit(f"the cache side did not only hit: {cache_fetcher.stats}")
    return samples


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="per measurement")
    parser.add_argument("--page", type=int, action="append",
                        help="page size (repeatable; default 10 and 50)")
    parser.add_argument("--order", choices=("interleaved", "back-to-back", "both"),
                        default="both")
    args = parser.parse_args()
    pages = args.page or [10, 50]
    orders = ["interleaved", "back-to-back"] if args.order == "both" else [args.order]

    ensure_servers()
    configure()
    import django

    django.setup()
    seed()
    db, cached = pipelines()
    print(common.machine())
    print(f"{ROWS} rows, tenant {TENANT!r}, status=processed, newest first; PostgreSQL "
          f"{PG_HOST}:{PG_PORT} vs Redis {REDIS_URL} (django-redis defaults); {args.requests} "
          f"requests each after {WARMUP} warm-up\n")
    head = (f"{'order':<12} {'page':>4} {'what':<8} {'db med':>8} {'db p99':>8} {'hit med':>8} "
            f"{'hit p99':>8} {'med ratio':>10} {'p99 ratio':>10}")
    print(head)
    print("-" * len(head))
    worst = dict.fromkeys(orders, 0.0)
    for order in orders:
        for page in pages:
            samples = measure(db, cached, page, args.requests, order)
            for what in ("fetch", "execute"):
                a, b = samples[f"{what} db"], samples[f"{what} cache"]
                med_a, med_b = statistics.median(a), statistics.median(b)
                if what == "fetch":
                    worst[order] = max(worst[order], med_b / med_a)
                print(f"{order:<12} {page:>4} {what:<8} {med_a * 1e3:>8.3f} "
                      f"{p99(a) * 1e3:>8.3f} {med_b * 1e3:>8.3f} {p99(b) * 1e3:>8.3f} "
                      f"{med_b / med_a:>10.2f} {p99(b) / p99(a):>10.2f}")
    print("\n(ms; ratio = cache hit / PostgreSQL; fetch = the fetcher alone, execute = the "
          "whole pipeline)")
    for order, value in worst.items():
        verdict = "meets" if value <= 0.2 else "misses"
        print(f"{order}: worst fetch ratio {value:.2f}: {verdict} the goal of a hit at most "
              f"0.2x the DB fetch")

if __name__ == "__main__":
    main()
