"""Enrichment: parallel enrichers against one and against sequential; queries per page against
DRF views with nested serializers.

    python benchmarks/enrichment.py [--requests 40] [--sqlite]

1. Latency. A page of 50 rows fetched from the database, then 0, 1 or 3 service enrichers
   (``BatchEnricher`` whose ``load`` takes 20 ms, as a remote call would), run in parallel or
   one after the other. Goal: 3 in parallel within 1.3x of 1.
2. Queries per page, at page sizes 10, 50 and 100, expanding owner, category, tags (M2M) and
   comments with their authors (reverse FK, then FK):
   * ours: ``PipelineViewSet`` + ``PrefetchEnricher`` per relation, ``ExpandableField``,
     with ``parallel_enrichment=True``, and once more at the Pipeline's own defaults
     (sequential enrichment, the default timeout);
   * naive DRF: ``ListAPIView`` with nested serializers (what one writes first: a query per
     item and relation);
   * DRF + prefetch: the same view with ``select_related``/``prefetch_related`` done by hand.
   Queries are counted on every connection of every thread (enrichers run on worker threads).
   The five views run interleaved (one request each per round, the order rotating); each cell
   prints the median and p10-p90 of its rounds, and each of ours its per-round ratio to the
   hand-tuned DRF view (median and p10-p90).

It uses the real PostgreSQL of ``scripts/services.sh`` (database ``datapipe_bench_enrich``,
created if missing, psycopg pool), or an SQLite file with ``--sqlite`` (or when PostgreSQL is
not reachable). Medians are the numbers to read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common

PG_HOST = os.environ.get("DATAPIPE_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("DATAPIPE_PG_PORT", "5432"))
PG_NAME = "datapipe_bench_enrich"
TENANT, ROWS, COMMENTS = "t1", 300, 3
SERVICE_DELAY = 0.020
PAGE_SIZES = (10, 50, 100)


# -- set-up ------------------------------------------------------------------------------------

def postgres_reachable() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=0.5):
            return True
    except OSError:
        return False


def redis_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


# The cache of the "cached" enricher row: the real Redis when it runs, else this process's memory.
CACHE = ({"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:6379/4"}
         if redis_reachable() else
         {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"})


def configure(use_sqlite: bool) -> str:
    if use_sqlite:
        path = Path(tempfile.mkdtemp(prefix="datapipe-bench-")) / "bench.sqlite3"
        database = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)}
        label = f"SQLite ({path})"
    else:
        common.ensure_postgres_database(PG_HOST, PG_PORT, PG_NAME)
        database = {"ENGINE": "django.db.backends.postgresql", "HOST": PG_HOST, "PORT": PG_PORT,
                    "NAME": PG_NAME, "USER": "postgres", "PASSWORD": "",
                    "OPTIONS": {"pool": {"min_size": 4, "max_size": 16}}}
        label = f"PostgreSQL {PG_HOST}:{PG_PORT}/{PG_NAME} (psycopg pool)"
    common.configure(
        DATABASES={"default": database}, ROOT_URLCONF=__name__,
        DATAPIPE={"PRIMARY": "default", "MAX_LIMIT": 100, "MAX_WORKERS": 16,
                  "CACHE_KEY_PREFIX": f"bench{os.getpid()}"},
        CACHES={"default": CACHE},
    )
    import django

    django.setup()
    return label


urlpatterns: list = []


def seed() -> None:
    from django.core.management import call_command

    from tests.testapp.models import Category, Comment, Item, Owner, Tag

    call_command("migrate", run_syncdb=True, verbosity=0)
    if Item.objects.filter(tenant=TENANT).count() == ROWS:
        return
    for model in (Comment, Item.tags.through, Item, Tag, Owner, Category):
        model.objects.all().delete()
    Owner.objects.bulk_create([Owner(id=i, name=f"owner {i}", email=f"o{i}@x") for i in
                               range(1, 21)])
    Category.objects.bulk_create([Category(id=i, name=f"category {i}") for i in range(1, 6)])
    Tag.objects.bulk_create([Tag(id=i, name=f"tag {i}") for i in range(1, 9)])
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    Item.objects.bulk_create([
        Item(id=i, tenant=TENANT, name=f"item {i}", status="processed", amount=i,
             created_at=start + dt.timedelta(minutes=i), day=start.date(),
             owner_id=i % 20 + 1, category_id=i % 5 + 1)
        for i in range(1, ROWS + 1)
    ])
    Item.tags.through.objects.bulk_create([
        Item.tags.through(item_id=i, tag_id=t)
        for i in range(1, ROWS + 1) for t in (i % 8 + 1, (i + 3) % 8 + 1)
    ])
    Comment.objects.bulk_create([
        Comment(item_id=i, author_id=(i + k) % 20 + 1, tenant=TENANT, body=f"comment {k}")
        for i in range(1, ROWS + 1) for k in range(COMMENTS)
    ])


class QueryCounter:
    """Counts the queries of every connection, in every thread."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        with self._lock:
            self.count += 1
        return execute(sql, params, many, context)

    def install(self) -> None:
        from django.db import connections
        from django.db.backends.signals import connection_created

        # First in the list: wrappers installed with `connection.execute_wrapper()` (the
        # statement timeout) pop the last entry when their block ends, which must stay theirs.
        def attach(sender, connection, **kwargs):  # type: ignore[no-untyped-def]
            if self not in connection.execute_wrappers:
                connection.execute_wrappers.insert(0, self)

        connection_created.connect(attach, weak=False)
        for conn in connections.all():
            if self not in conn.execute_wrappers:
                conn.execute_wrappers.insert(0, self)


# -- 1. latency: parallel against one and against sequential -----------------------------------

def service(name: str):  # type: ignore[no-untyped-def]
    """A remote service's batch call: ``SERVICE_DELAY`` per call, whatever the batch."""

    def load(keys):  # type: ignore[no-untyped-def]
        time.sleep(SERVICE_DELAY)
        return {k: {"id": k, "service": name} for k in keys}

    return load


def latency(n: int) -> None:
    from datapipe_django import Pipeline, PipelineRequest
    from datapipe_django.enrichers import BatchEnricher
    from datapipe_django.fetchers import ORMFetcher
    from tests.testapp.models import Item

    def pipeline(name: str, count: int, parallel: bool, cache_ttl: float | None = None
                 ) -> Pipeline:
        return Pipeline(
            f"bench-{name}", model=Item, tenant_field="tenant", ordering=("-created_at", "-id"),
            fetchers=[ORMFetcher("default")], register=False, timeout=5.0,
            parallel_enrichment=parallel, max_workers=5,
            enrichers=[BatchEnricher(s, key="pk", load=service(s), cache_ttl=cache_ttl)
                       for s in ("ledger", "risk", "fx")[:count]])

    cases = [
        ("fetch only", pipeline("none", 0, True), set()),
        ("fetch + 1 enricher", pipeline("one", 1, True), {"ledger"}),
        ("fetch + 3 enrichers, parallel", pipeline("par", 3, True), {"ledger", "risk", "fx"}),
        ("fetch + 3 enrichers, sequential", pipeline("seq", 3, False), {"ledger", "risk", "fx"}),
        ("fetch + 1 enricher, cache_ttl=600", pipeline("cached", 1, True, 600), {"ledger"}),
    ]
    def run(label: str, p: Pipeline, expand: set[str]) -> Callable[[], None]:
        def call() -> None:
            result = p.execute(PipelineRequest(tenant=TENANT, limit=50, expand=expand))
            if result.errors or len(result.items) != 50:
                raise SystemExit(f"{label}: unexpected result {result.errors}")
        return call

    rounds = max(2, n // 8)
    per_round = max(1, n // rounds)
    samples = common.interleaved({label: run(label, p, expand) for label, p, expand in cases},
                                 rounds, per_round, warmup=5)
    single = samples["fetch + 1 enricher"]
    where = CACHE["BACKEND"].rsplit(".", 1)[-1]
    print(f"1. Latency: page of 50 rows, enrichers of {SERVICE_DELAY * 1e3:.0f} ms each, "
          f"{rounds} rounds x {per_round} interleaved runs per row after 5 warm-up; the cached "
          f"row hits {where}\n")
    head = f"{'':<34} {'ms':>20} {'x 1 enricher':>18}"
    print(head)
    print("-" * len(head))
    for label, _, _ in cases:
        values = samples[label]
        print(f"{label:<34} {common.fmt(common.round_medians(values), 1e3, 1):>20} "
              f"{common.fmt(common.round_ratios(values, single)):>18}")
    print("(ms: median of the round medians, p10-p90 over rounds; x 1 enricher: per round the "
          "median of the per-pair ratios, median and p10-p90 over rounds)")
    ratio = statistics.median(common.round_ratios(samples["fetch + 3 enrichers, parallel"],
                                                  single))
    print(f"\n3 parallel / 1 enricher = {ratio:.2f}x (goal <= 1.3x): "
          f"{'met' if ratio <= 1.3 else 'NOT met'}")


# -- 2. queries per page -----------------------------------------------------------------------

def views():  # type: ignore[no-untyped-def]
    from django.db.models import Prefetch
    from rest_framework import generics, serializers
    from rest_framework.pagination import BasePagination
    from rest_framework.response import Response

    from datapipe_django import Pipeline
    from datapipe_django.enrichers import PrefetchEnricher
    from datapipe_django.fetchers import ORMFetcher
    from datapipe_django.rest import ExpandableField, PipelineViewSet
    from tests.testapp.models import Comment, Item
    from tests.testapp.serializers import (
        CategorySerializer,
        CommentSerializer,
        OwnerSerializer,
        TagSerializer,
    )

    # Ours: relations render as ids unless expanded; enrichers load them per page.
    class ItemSerializer(serializers.ModelSerializer):
        owner = ExpandableField(OwnerSerializer)
        category = ExpandableField(CategorySerializer)
        tags = ExpandableField(TagSerializer, many=True)
        comments = ExpandableField(CommentSerializer, many=True)

        class Meta:
            model = Item
            fields = ("id", "name", "amount", "created_at", "owner", "category", "tags",
                      "comments")

    pipeline = Pipeline(
        "bench-expand", model=Item, tenant_field="tenant", ordering=("-created_at", "-id"),
        fetchers=[ORMFetcher("default")], register=False, timeout=5.0,
        parallel_enrichment=True, max_workers=5,
        enrichers=[PrefetchEnricher(r) for r in ("owner", "category", "tags", "comments",
                                                  "comments.author")])

    class Ours(PipelineViewSet):
        serializer_class = ItemSerializer

        def get_tenant(self):  # type: ignore[no-untyped-def]
            return TENANT

    Ours.pipeline = pipeline  # type: ignore[assignment]

    # The same at the Pipeline's own defaults: no parallel_enrichment, the default timeout
    # (DATAPIPE["TIMEOUT"]), the enrichers one after the other.
    defaults = Pipeline(
        "bench-expand-defaults", model=Item, tenant_field="tenant",
        ordering=("-created_at", "-id"), fetchers=[ORMFetcher("default")], register=False,
        enrichers=[PrefetchEnricher(r) for r in ("owner", "category", "tags", "comments",
                                                  "comments.author")])

    class OursDefaults(Ours):
        pass

    OursDefaults.pipeline = defaults  # type: ignore[assignment]

    # The same, tuned as the hand-written DRF view is: the foreign keys joined into the fetch
    # (join=True), the comments' authors selected with the comments, and the to-many
    # relations uncapped (limit=False), as the view's plain prefetch_related is.
    joined = Pipeline(
        "bench-expand-joined", model=Item, tenant_field="tenant",
        ordering=("-created_at", "-id"), fetchers=[ORMFetcher("default")], register=False,
        timeout=5.0, parallel_enrichment=True, max_workers=5,
        enrichers=[PrefetchEnricher("owner", join=True), PrefetchEnricher("category", join=True),
                   PrefetchEnricher("tags", limit=False),
                   PrefetchEnricher("comments", limit=False,
                                    queryset=Comment.objects.select_related("author")),
                   PrefetchEnricher("comments.author")])

    class OursJoined(Ours):
        pass

    OursJoined.pipeline = joined  # type: ignore[assignment]

    # DRF: nested serializers, as one writes them first.
    class NestedComment(serializers.ModelSerializer):
        author = OwnerSerializer()

        class Meta:
            model = Comment
            fields = ("id", "body", "author")

    class NestedItem(serializers.ModelSerializer):
        owner = OwnerSerializer()
        category = CategorySerializer()
        tags = TagSerializer(many=True)
        comments = NestedComment(many=True)

        class Meta:
            model = Item
            fields = ("id", "name", "amount", "created_at", "owner", "category", "tags",
                      "comments")

    class Envelope(BasePagination):
        """limit + 1 rows, our envelope, no COUNT(*)."""

        def paginate_queryset(self, queryset, request, view=None):  # type: ignore[no-untyped-def]
            limit = int(request.query_params.get("limit", 10))
            rows = list(queryset[: limit + 1])
            self.has_more = len(rows) > limit
            return rows[:limit]

        def get_paginated_response(self, data):  # type: ignore[no-untyped-def]
            return Response({"entity": "collection", "count": len(data),
                             "has_more": self.has_more, "next_cursor": None, "items": data})

    class Naive(generics.ListAPIView):
        serializer_class = NestedItem
        pagination_class = Envelope

        def get_queryset(self):  # type: ignore[no-untyped-def]
            return Item.objects.filter(tenant=TENANT).order_by("-created_at", "-id")

    class Prefetched(Naive):
        def get_queryset(self):  # type: ignore[no-untyped-def]
            return super().get_queryset().select_related("owner", "category").prefetch_related(
                "tags", Prefetch("comments", queryset=Comment.objects.select_related("author")))

    return (("ours (PipelineViewSet + PrefetchEnricher)", Ours.as_view({"get": "list"}), True),
            ("ours, Pipeline defaults (sequential)", OursDefaults.as_view({"get": "list"}),
             True),
            ("ours, tuned (join, limit=False, queryset)", OursJoined.as_view({"get": "list"}),
             True),
            ("naive DRF (nested serializers)", Naive.as_view(), False),
            ("DRF + select/prefetch_related by hand", Prefetched.as_view(), False))


def queries(n: int, counter: QueryCounter) -> None:
    import json

    expand = "owner,category,tags,comments.author"
    implementations = views()

    def call(view, size, ours):  # type: ignore[no-untyped-def]
        params = {"limit": size, **({"expand": expand} if ours else {})}
        before = counter.count
        elapsed, response = common.timed_get(view, params)
        return elapsed, counter.count - before, json.loads(response.content)

    # The three return the same JSON (tags have no ordering: compared as sets).
    def normal(items):  # type: ignore[no-untyped-def]
        return [{**i, "tags": sorted(i["tags"], key=lambda t: t["id"])} for i in items]

    bodies = [normal(call(view, 100, ours)[2]["items"]) for _, view, ours in implementations]
    for (label, _, _), other in zip(implementations[1:], bodies[1:], strict=True):
        for theirs, mine in zip(other, bodies[0], strict=True):
            if json.dumps(theirs, sort_keys=True) != json.dumps(mine, sort_keys=True):
                raise SystemExit(f"{label} disagrees with ours:\n{theirs}\n{mine}")

    print(f"\n2. Queries per page and time, expanding owner, category, tags and "
          f"comments.author ({COMMENTS} comments per item), {n} rounds per page size, the "
          f"views interleaved in each round (the order rotating)\n")
    results: dict[tuple[int, int], list[tuple[float, int]]] = {}
    for size in PAGE_SIZES:
        for k in range(len(implementations)):  # warm-up
            call(implementations[k][1], size, implementations[k][2])
        for r in range(n):
            order = list(range(len(implementations)))
            order = order[r % len(order):] + order[: r % len(order)]
            for k in order:
                elapsed, count, _ = call(implementations[k][1], size, implementations[k][2])
                results.setdefault((k, size), []).append((elapsed, count))

    spread = common.fmt
    head = f"{'':<42}" + "".join(f" {f'page {s}':>28}" for s in PAGE_SIZES)
    print(head)
    print(f"{'':<42}" + "".join(f" {'queries':>7} {'ms med (p10-p90)':>20}" for _ in PAGE_SIZES))
    print("-" * len(head))
    for k, (label, _, _) in enumerate(implementations):
        cells = []
        for size in PAGE_SIZES:
            runs = results[(k, size)]
            counts = sorted({c for _, c in runs})
            cells.append(f" {'/'.join(map(str, counts)):>7} "
                         f"{spread([t * 1e3 for t, _ in runs]):>20}")
        print(f"{label:<42}" + "".join(cells))
    hand = len(implementations) - 1  # DRF + select/prefetch_related by hand
    print(f"\nRatio to {implementations[hand][0]}, per round (median, p10-p90):")
    for k, (label, _, _) in enumerate(implementations[:hand]):
        cells = []
        for size in PAGE_SIZES:
            ratios = [a / b for (a, _), (b, _) in zip(results[(k, size)], results[(hand, size)],
                                                      strict=True)]
            cells.append(f" {spread(ratios):>28}")
        print(f"{label:<42}" + "".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40, help="runs per cell (default 40)")
    parser.add_argument("--sqlite", action="store_true",
                        help="an SQLite file instead of the real PostgreSQL")
    args = parser.parse_args()
    use_sqlite = args.sqlite or not postgres_reachable()
    if use_sqlite and not args.sqlite:
        print(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT}; using SQLite "
              f"(start it with `bash scripts/services.sh start`).\n")
    label = configure(use_sqlite)
    seed()
    counter = QueryCounter()
    counter.install()
    print(f"{common.machine()}\nDatabase: {label}; {ROWS} items\n")
    latency(args.requests)
    queries(args.requests, counter)


if __name__ == "__main__":
    main()
