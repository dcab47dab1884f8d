"""Search requests through the endpoint against the same query sent by the client alone.

    python benchmarks/search.py [--rounds 7] [--requests 40] [--page 20]
                                [--set all|plain|features]
                                [--engine elasticsearch|opensearch]

Needs PostgreSQL on 127.0.0.1:5432 and the search node on 127.0.0.1:9200 (``bash
scripts/services.sh start``). It creates the database ``datapipe_bench_search`` if missing,
the ``tests.testapp`` tables with 20,000 ``Item`` rows in two tenants (names of three words
out of 60), and the index ``datapipe-bench-items`` (rebuilt from the table when their sizes
differ; a ``DateNanosField`` for ``created_at``, keywords for the filters).

Per scenario (tenant ``t1``, ``q``, page size ``--page``) it measures, interleaved:

* ``endpoint (db)``: ``PipelineViewSet`` over ``SearchFetcher(using="default")``:
  RequestFactory request → view → ``render()``: validation, the FilterSet compiled to the
  query, one search, one ``in_bulk`` query on PostgreSQL, the serializer, JSON;
* ``endpoint (_source)``: the same with ``SearchFetcher(using=None)``: instances built from
  the hits' ``_source``, no database query;
* ``client alone``: the body the fetcher sends for that request, sent with the
  Elasticsearch client and its response decoded (``_source`` included): what any code
  calling the engine pays at least.

The ``features`` set (issue 15) is ``ordering=relevance`` on page 1 and on a cursor page
~200 rows in, each with and without ``highlight=true`` and ``facets=status,active``: the
client sends the same body (``_score`` sort, ``highlight``, ``terms`` aggregations). It adds
the side ``endpoint (PostgreSQL)``: the same requests served by the database fallback
(``ORMFetcher(search="fulltext")``: ``ts_rank_cd``, ``ts_headline``, ``GROUP BY``), its
cursor taken from its own pages (its ranking is not the engine's, so its ids are not
compared). ``--engine opensearch`` runs everything against the OpenSearch node (127.0.0.1:9201)
with a django-opensearch-dsl Document and opensearch-py.

It first checks that the three return the same ids, then runs every scenario and side
interleaved in ``--rounds`` rounds and prints per side the median of the round medians
(p10-p90 over rounds), p99 over every request against the 200 ms target of the seed, and the
endpoint's overhead over the client (per round, median and p10-p90 over rounds). p99 of a few
hundred requests on a shared machine is noisy; medians are the numbers to compare.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common
from benchmarks.common import HINT, ensure_postgres_database, timed_get

PG_HOST = os.environ.get("DATAPIPE_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("DATAPIPE_PG_PORT", "5432"))
PG_NAME = "datapipe_bench_search"
SEARCH_URL = os.environ.get("DATAPIPE_BENCH_SEARCH", "http://127.0.0.1:9200")
OPENSEARCH_URL = os.environ.get("DATAPIPE_BENCH_OPENSEARCH", "http://127.0.0.1:9201")
INDEX = "datapipe-bench-items-v2"
ENGINE = "elasticsearch"  # or "opensearch" (--engine)
ROWS, TENANT = 20_000, "t1"
WARMUP = 30
TARGET_P99 = 0.200
WORDS = (
    "amber", "ash", "azure", "beige", "black", "blue", "bronze", "brown", "coral", "cream",
    "crimson", "cyan", "gold", "gray", "green", "indigo", "ivory", "jade", "khaki", "lemon",
    "lilac", "lime", "linen", "magenta", "maroon", "mint", "navy", "olive", "orange", "peach",
    "pearl", "pink", "plum", "purple", "red", "rose", "ruby", "rust", "saffron", "salmon",
    "sand", "scarlet", "sepia", "silver", "sky", "slate", "snow", "steel", "tan", "taupe",
    "teal", "tomato", "topaz", "umber", "violet", "wheat", "white", "wine", "yellow",
)


def configure() -> None:
    from benchmarks import settings as base

    common.configure(
        INSTALLED_APPS=[*base.INSTALLED_APPS, "django_elasticsearch_dsl",
                        "django_opensearch_dsl"],
        DATABASES={"default": {
            "ENGINE": "django.db.backends.postgresql", "HOST": PG_HOST, "PORT": PG_PORT,
            "NAME": PG_NAME, "USER": "postgres", "PASSWORD": "", "CONN_MAX_AGE": None,
        }},
        ELASTICSEARCH_DSL={"default": {"hosts": SEARCH_URL, "request_timeout": 10}},
        ELASTICSEARCH_DSL_AUTOSYNC=False,
        OPENSEARCH_DSL={"default": {"hosts": [OPENSEARCH_URL], "timeout": 10}},
        OPENSEARCH_DSL_AUTOSYNC=False,
        DATAPIPE={"PRIMARY": "default", "MAX_LIMIT": 100, "TIMEOUT": 2.0},
    )


def ensure_services() -> None:
    import urllib.request

    ensure_postgres_database(PG_HOST, PG_PORT, PG_NAME)
    url = OPENSEARCH_URL if ENGINE == "opensearch" else SEARCH_URL
    try:
        urllib.request.urlopen(f"{url}/_cluster/health", timeout=3).read()
    except OSError as exc:
        sys.exit(f"The {ENGINE} node is not reachable at {url} ({exc}); {HINT}")


def document() -> type[Any]:
    """The bench index's Document, for django-elasticsearch-dsl or django-opensearch-dsl: the
    same fields, each library's own base class, field types and registry."""
    if ENGINE == "opensearch":
        from django_opensearch_dsl import Document, fields
        from django_opensearch_dsl.registries import registry

        from datapipe_django.search.fields import OpenSearchDateNanosField as DateField
    else:
        from django_elasticsearch_dsl import Document, fields
        from django_elasticsearch_dsl.registries import registry

        from datapipe_django.search.fields import DateNanosField as DateField  # type: ignore[no-redef]
    from tests.testapp.models import Item

    @registry.register_document
    class BenchItemDocument(Document):
        tenant = fields.KeywordField()
        name = fields.TextField(fields={"raw": fields.KeywordField()})
        status = fields.KeywordField()
        created_at = DateField()
        category = fields.LongField(attr="category_id")
        owner = fields.LongField(attr="owner_id")

        class Index:
            name = INDEX
            settings = {"number_of_shards": 1, "number_of_replicas": 0}

        class Django:
            model = Item
            fields = ["id", "amount", "active", "day", "score"]

    return BenchItemDocument


def seed(doc: type[Any]) -> None:
    from django.core.management import call_command
    from django.db import connection

    from datapipe_django.search.documents import adapter_for
    from datapipe_django.search.indexing import Progress, rebuild
    from tests.testapp.models import Item

    call_command("migrate", run_syncdb=True, verbosity=0)
    if Item.objects.count() != ROWS:
        Item.objects.all().delete()
        rng = random.Random(11)
        start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        rows = []
        for i in range(ROWS):
            created = start + dt.timedelta(seconds=rng.uniform(0, 180 * 86_400))
            rows.append(Item(
                id=i + 1, tenant=("t1", "t2")[i % 2], name=" ".join(rng.sample(WORDS, 3)),
                status=rng.choice(Item.Status.values), amount=rng.randrange(1, 1_000_000),
                active=rng.random() < 0.8, created_at=created, day=created.date(),
                score=None if rng.random() < 0.2 else rng.randrange(100)))
        Item.objects.bulk_create(rows, batch_size=2_000)
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Item._meta.db_table}")
    with connection.cursor() as cursor:  # what docs/search.md advises for the fallback
        cursor.execute(f"CREATE INDEX IF NOT EXISTS bench_item_name_fulltext ON "
                       f"{Item._meta.db_table} USING gin "
                       f"(to_tsvector('simple'::regconfig, COALESCE(name, '')))")
    adapter = adapter_for(doc)
    try:
        indexed = adapter.count()
    except Exception as exc:
        if adapter.unavailable_reason(exc) is None:
            raise
        indexed = -1
    if indexed != ROWS:
        report = rebuild(doc, using="default", batch_size=2_000,
                         progress=Progress(f"indexing {INDEX}"))
        print(f"indexed {report.indexed} rows into {report.built} in {report.seconds:.1f}s")


def views(doc: type[Any]) -> dict[str, Any]:
    from datapipe_django import Pipeline
    from datapipe_django.fetchers import ORMFetcher, SearchFetcher
    from datapipe_django.rest import PipelineViewSet
    from tests.testapp.filters import ItemFilterSet
    from tests.testapp.models import Item
    from tests.testapp.serializers import ItemSerializer

    def view(using: str | None, *, engine: bool = True) -> Any:
        database = ORMFetcher("default", name="appdb", search="fulltext")
        pipeline = Pipeline("bench-search", model=Item, filterset_class=ItemFilterSet,
                            search_fields=("name",), tenant_field="tenant",
                            ordering=("-created_at", "-id"),
                            ordering_fields=("created_at", "amount", "score"),
                            facet_fields=("status", "active"),
                            fetchers=[SearchFetcher(doc, using=using), database] if engine
                            else [database],
                            register=False)

        class SearchViewSet(PipelineViewSet):
            serializer_class = ItemSerializer

            def get_pipeline(self) -> Pipeline:
                return pipeline

            def get_tenant(self) -> str:
                return TENANT

        SearchViewSet.pipeline = pipeline
        return SearchViewSet.as_view({"get": "list"})

    return {"endpoint (db)": view("default"), "endpoint (_source)": view(None),
            "endpoint (PostgreSQL)": view(None, engine=False)}


#: Samples thrown away because a server was restarted under the run (a shared machine).
DISCARDED = [0]


def call(view: Any, params: dict[str, Any]) -> tuple[float, dict[str, Any], str]:
    """One timed request. A 503 (a server another process restarted) is not a sample: wait
    for the servers, count it in ``DISCARDED`` and ask again (20 times at most)."""
    for _ in range(20):
        try:
            elapsed, response = timed_get(view, params)
        except SystemExit as exc:
            if "HTTP 503" not in str(exc):
                raise
            DISCARDED[0] += 1
            time.sleep(3)
            from django.db import connections

            connections.close_all()
            continue
        return elapsed, json.loads(response.content), response["X-Datapipe-Source"]
    raise SystemExit(f"{params}: the servers stayed down")


def client_body(view: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The body the search fetcher sends for ``params`` (with ``_source``, the timeout off)."""
    from datapipe_django import PipelineRequest
    from datapipe_django.stages import fetch_request, validate
    from datapipe_django.state import State

    pipeline = view.cls.pipeline
    own = ("q", "limit", "cursor", "ordering", "highlight", "facets")
    filters = {k: v for k, v in params.items() if k not in own}
    state = State(pipeline=pipeline, request=PipelineRequest(
        tenant=TENANT, search=params.get("q"), limit=params.get("limit"),
        cursor=params.get("cursor"), ordering=params.get("ordering"), filters=filters,
        highlight=params.get("highlight", False), facets=params.get("facets", ())),
        deadline=None)
    validate(state)
    body = pipeline.fetchers[0].build_body(fetch_request(state))
    body["_source"] = True
    return body


def client_call(client: Any, body: dict[str, Any]) -> tuple[float, list[int]]:
    start = time.perf_counter()
    response = client.search(index=INDEX, body=body)
    hits = getattr(response, "body", response)["hits"]["hits"]  # decoded, _source included
    elapsed = time.perf_counter() - start
    return elapsed, [int(hit["_id"]) for hit in hits]


def deep_cursor(view: Any, params: dict[str, Any], page: int) -> str:
    """The cursor of the page ~200 rows into ``params``' results."""
    cursor = None
    for _ in range(200 // page):
        cursor = call(view, {**params, **({"cursor": cursor} if cursor else {})})[1][
            "next_cursor"]
        if cursor is None:
            raise SystemExit(f"{params}: fewer than 200 rows match")
    return cursor


#: The side served by the database fallback (its own cursors: its scores are not the engine's).
DATABASE_SIDE = "endpoint (PostgreSQL)"


Case = tuple[str, dict[str, Any], dict[str, Any] | None]


def scenarios(endpoints: dict[str, Any], page: int, which: str) -> list[Case]:
    """(label, params, params of the database side or None: it sits this one out)."""
    first = next(iter(endpoints.values()))
    plain: list[Case] = []
    if which in ("all", "plain"):
        cursor = deep_cursor(first, {"q": "red", "limit": page}, page)
        plain = [
            ("q=red", {"q": "red", "limit": page}, None),
            ("q=red blue", {"q": "red blue", "limit": page}, None),
            ("q=red status=processed", {"q": "red", "status": "processed", "limit": page},
             None),
            ("q=red ordering=-amount", {"q": "red", "ordering": "-amount", "limit": page},
             None),
            ("q=red, cursor ~200 rows in", {"q": "red", "limit": page, "cursor": cursor},
             None),
        ]
    if which not in ("all", "features"):
        return plain
    # Names are three words out of 60, so documents of one word score alike: the pk breaks
    # the ties, and the cursor carries both.
    ranked = {"q": "red", "ordering": "relevance", "limit": page}
    deep = deep_cursor(first, ranked, page)
    deep_db = deep_cursor(endpoints[DATABASE_SIDE], ranked, page)
    extras = {"": {}, " +hl": {"highlight": "true"}, " +facets": {"facets": "status,active"},
              " +hl+facets": {"highlight": "true", "facets": "status,active"}}
    features: list[Case] = []
    for where, cursor, db_cursor in (("relevance p1", None, None),
                                     ("relevance ~200 in", deep, deep_db)):
        for label, extra in extras.items():
            params = {**ranked, **extra, **({"cursor": cursor} if cursor else {})}
            features.append((f"{where}{label}", params,
                             {**params, **({"cursor": db_cursor} if db_cursor else {})}))
    return plain + features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=40,
                        help="per round, scenario and side")
    parser.add_argument("--page", type=int, default=20, help="page size (default 20)")
    parser.add_argument("--set", default="all", choices=["all", "plain", "features"],
                        help="the scenarios: plain q, issue 15's features, or both")
    parser.add_argument("--engine", default="elasticsearch",
                        choices=["elasticsearch", "opensearch"])
    args = parser.parse_args()
    global ENGINE
    ENGINE = args.engine

    ensure_services()
    configure()
    import django

    django.setup()
    doc = document()
    seed(doc)
    from datapipe_django.search.documents import adapter_for

    client = adapter_for(doc).client()
    endpoints = views(doc)
    cases = scenarios(endpoints, args.page, args.set)
    bodies = {label: client_body(endpoints["endpoint (db)"], params)
              for label, params, _ in cases}

    def runs(db_params: dict[str, Any] | None, params: dict[str, Any]) -> Any:
        for name, view in endpoints.items():
            if name != DATABASE_SIDE:
                yield name, view, params
            elif db_params is not None:
                yield name, view, db_params

    for label, params, db_params in cases:  # the same hits everywhere
        expected = client_call(client, bodies[label])[1][: args.page]
        for name, view, asked in runs(db_params, params):
            _, body, source = call(view, asked)
            ids = [item["id"] for item in body["items"]]
            if name == DATABASE_SIDE:  # ranked by ts_rank_cd: other ids, the same count
                if source != "appdb" or len(ids) != len(expected):
                    raise SystemExit(f"{label}: {name} served {source}: {ids[:5]}")
            elif source != "search" or ids != expected or not ids:
                raise SystemExit(f"{label}: {name} disagrees with the client ({source}): "
                                 f"{ids[:5]} vs {expected[:5]}")
    sides: dict[str, Any] = {}
    for label, params, db_params in cases:
        sides[f"{label}|client alone"] = lambda b=bodies[label]: client_call(client, b)
        for name, view, asked in runs(db_params, params):
            sides[f"{label}|{name}"] = lambda v=view, a=asked: call(v, a)
    samples = common.interleaved(sides, args.rounds, args.requests, warmup=WARMUP)

    version = client.info()["version"]["number"]
    print(common.machine())
    print(f"{ {'elasticsearch': 'Elasticsearch', 'opensearch': 'OpenSearch'}[ENGINE]} "
          f"{version}, {ROWS:,} rows "
          f"({ROWS // 2:,} in the tenant), page {args.page}, {args.rounds} rounds x "
          f"{args.requests} requests per scenario and side, interleaved")
    order = ["endpoint (db)", "endpoint (_source)", DATABASE_SIDE, "client alone"]
    head = (f"{'scenario':<30} {'side':<21} {'ms':>20} {'p99':>7}  {'p99 < 200 ms':<12} "
            f"{'over the client, ms':>20}")
    print(head)
    print("-" * len(head))
    worst = worst_db = 0.0
    for label, _, _ in cases:
        client_rounds = common.round_medians(samples[f"{label}|client alone"])
        for side in order:
            if f"{label}|{side}" not in samples:
                continue
            rounds = samples[f"{label}|{side}"]
            medians = common.round_medians(rounds)
            p99 = common.percentile(common.pooled(rounds), 99)
            if side == DATABASE_SIDE:
                worst_db = max(worst_db, p99)
            elif side != "client alone":
                worst = max(worst, p99)
            extra = "" if side in ("client alone", DATABASE_SIDE) else common.fmt(
                [m - c for m, c in zip(medians, client_rounds, strict=True)], 1e3)
            print(f"{label:<30} {side:<21} {common.fmt(medians, 1e3):>20} {p99 * 1e3:>7.2f}  "
                  f"{'yes' if p99 < TARGET_P99 else 'NO':<12} {extra:>20}")
    print("(ms: median of the round medians, p10-p90 over rounds; p99 over every request; over "
          "the client: per round the endpoint's median minus the client's, median and p10-p90 "
          "over rounds)")
    print(f"worst endpoint p99: {worst * 1e3:.1f} ms against the {TARGET_P99 * 1e3:.0f} ms "
          f"target: {'met' if worst < TARGET_P99 else 'MISSED'}")
    if DISCARDED[0]:
        print(f"{DISCARDED[0]} requests answered 503 while a server was restarted by another "
              f"process; they were asked again and are not in the samples")
    if worst_db:
        print(f"worst p99 of the PostgreSQL fallback: {worst_db * 1e3:.1f} ms (no client to "
              f"compare with: its own SQL, ranked and counted by the database)")


if __name__ == "__main__":
    main()
