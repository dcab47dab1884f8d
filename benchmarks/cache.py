"""A cache hit (CachedFetcher on the real Redis) against the same request from PostgreSQL.

    python benchmarks/cache.py [--rounds 7] [--requests 80] [--page 10 --page 50]

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
* ``execute``: the whole ``pipeline.execute()`` (validation, FilterSet, chain, cursor);

then one Redis round trip alone (a ``GET`` on django-redis's client) right after a PostgreSQL
fetch and right after another round trip: the floor of any hit, and the part of it that
interleaving slows down.

in ``--rounds`` rounds, and prints per side the median of the round medians (p10-p90 over
rounds) and the ratio cache / db (per round the median of the per-pair ratios; median and
p10-p90 over rounds). It measures twice: with the hit and the PostgreSQL fetch interleaved (db,
cache, db, cache...: both see the same load), and back to back (within each round every db
request, then every cache request: each side has the CPU caches, the connection and the server
to itself). ``--order`` picks one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common
from benchmarks.common import (
    HINT,
    ensure_postgres_database,
    first_line,
    fmt,
    interleaved,
    round_medians,
    round_ratios,
    seed_items,
    timed,
)

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


def round_trips(db: Any, page: int, rounds: int, n: int) -> dict[str, list[list[float]]]:
    """One Redis round trip alone (a GET of a missing key on django-redis's own client and
    connection pool), timed right after a PostgreSQL fetch of the page (untimed) and right
    after another round trip: ``{"after PG": rounds, "after Redis": rounds}``. What any hit
    pays whatever its code, in each setting."""
    from django.core.cache import caches

    client = caches["default"].client.get_client()
    request, fetcher = fetch_request(db, page), db.fetchers[0]
    out: dict[str, list[list[float]]] = {"after PG": [], "after Redis": []}
    for _ in range(rounds):
        cold, warm = [], []
        for _ in range(n):
            fetcher.fetch(request)
            cold.append(timed(lambda: client.get("bench:round-trip-probe")))
            warm.append(timed(lambda: client.get("bench:round-trip-probe")))
        out["after PG"].append(cold)
        out["after Redis"].append(warm)
    return out


def measure(db: Any, cached: Any, page: int, rounds: int, n: int, order: str
            ) -> dict[str, list[list[float]]]:
    """``{call: [[seconds] per round]}`` for the four calls, ``rounds`` rounds of ``n`` each:
    ``interleaved`` (db, cache, db, cache... call by call) or ``back-to-back`` (each call's
    ``n`` in a row within a round); the order of the calls rotates from round to round."""
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
    samples = interleaved(calls, rounds, n, warmup=WARMUP,
                          back_to_back=order == "back-to-back")
    if cache_fetcher.stats["misses"] != misses or cache_fetcher.stats["bypasses"]:
        raise SystemExit(f"the cache side did not only hit: {cache_fetcher.stats}")
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=80, help="per round and call")
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
          f"{PG_HOST}:{PG_PORT} vs Redis {REDIS_URL} (django-redis defaults); {args.rounds} "
          f"rounds x {args.requests} requests per call after {WARMUP} warm-up\n")
    head = (f"{'order':<12} {'page':>4} {'what':<8} {'db ms':>20} {'hit ms':>20} "
            f"{'hit/db':>18}")
    print(head)
    print("-" * len(head))
    worst = dict.fromkeys(orders, 0.0)
    for order in orders:
        for page in pages:
            samples = measure(db, cached, page, args.rounds, args.requests, order)
            for what in ("fetch", "execute"):
                a, b = samples[f"{what} db"], samples[f"{what} cache"]
                ratios = round_ratios(b, a)
                if what == "fetch":
                    worst[order] = max(worst[order], statistics.median(ratios))
                print(f"{order:<12} {page:>4} {what:<8} {fmt(round_medians(a), 1e3, 3):>20} "
                      f"{fmt(round_medians(b), 1e3, 3):>20} {fmt(ratios):>18}")
    trips = round_trips(db, pages[0], args.rounds, args.requests)
    print(f"\nOne Redis round trip alone (GET, django-redis's connection pool), page "
          f"{pages[0]}: right after a PostgreSQL fetch "
          f"{fmt(round_medians(trips['after PG']), 1e3, 3)} ms, right after another round trip "
          f"{fmt(round_medians(trips['after Redis']), 1e3, 3)} ms")
    print("\n(ms: median of the round medians, p10-p90 over rounds; hit/db: the cache hit / the "
          "PostgreSQL fetch, per round the median of the per-pair ratios, then median and "
          "p10-p90 over rounds; fetch = the fetcher alone, execute = the whole pipeline)")
    for order, value in worst.items():
        verdict = "meets" if value <= 0.2 else "misses"
        print(f"{order}: worst fetch ratio {value:.2f}: {verdict} the goal of a hit at most "
              f"0.2x the DB fetch")


if __name__ == "__main__":
    main()
