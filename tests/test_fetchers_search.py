"""`SearchFetcher` on the real engine: pipelines and the REST endpoint over an index of
:class:`tests.testapp.models.Item`, rows read back from the database (SQLite here; PostgreSQL
in tests/test_elasticsearch_specs.py) or built from ``_source``."""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from rest_framework.test import APIRequestFactory

from datapipe_django import FallbackMode, NoFetcher, Pipeline, PipelineRequest
from datapipe_django.errors import SourceUnavailable
from datapipe_django.fetchers import ORMFetcher, SearchFetcher
from datapipe_django.rest import PipelineViewSet
from datapipe_django.search.documents import adapter_for
from datapipe_django.stages import fetch_request, validate
from datapipe_django.state import State
from datapipe_django.test import InMemoryFetcher
from tests.search_documents import (
    ItemDocument,
    index_objects,
    recreate,
    search_indices_fixture,  # noqa: F401
)
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Category, Item, Owner
from tests.testapp.serializers import ItemSerializer

pytestmark = [pytest.mark.search, pytest.mark.django_db, pytest.mark.usefixtures("world")]

BASE = dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)
WORDS = ["red apple", "green apple", "red pear", "blue plum", "Red APPLE pie", "apple-red"]


CATEGORIES = {1: "fruit", 2: "veg"}
OWNERS = {1: "Ann", 2: "bob"}


def make_rows() -> list[Item]:
    owners = {pk: Owner(id=pk, name=name) for pk, name in OWNERS.items()}
    rows = []
    for pk in range(1, 31):
        rows.append(Item(
            id=pk, tenant="t1" if pk % 5 else "t2", name=f"{WORDS[pk % len(WORDS)]} {pk}",
            status=["queued", "processed", "reversed"][pk % 3], amount=(pk * 7) % 11,
            active=pk % 4 != 0,
            # Ties on created_at (pk breaks them) and sub-millisecond differences.
            created_at=BASE + dt.timedelta(microseconds=(pk // 2) * 300),
            day=(BASE + dt.timedelta(days=pk % 4)).date(),
            score=None if pk % 3 == 0 else pk % 5,
            category_id=[None, 1, 2][pk % 3],
            owner=None if pk % 4 == 0 else owners[1 + pk % 2],
        ))
    return rows


@pytest.fixture(scope="module")
def indexed(search_indices: None) -> None:
    """The rows indexed once for the module (the tests do not write to the index)."""
    recreate(ItemDocument)
    index_objects(make_rows())


@pytest.fixture
def world(indexed: None) -> list[Item]:
    """The same rows in the database, for this test."""
    Category.objects.bulk_create([Category(id=pk, name=n) for pk, n in CATEGORIES.items()])
    Owner.objects.bulk_create([Owner(id=pk, name=n) for pk, n in OWNERS.items()])
    return Item.objects.bulk_create(make_rows())


def pipeline(*fetchers: Any, **kwargs: Any) -> Pipeline:
    kwargs.setdefault("ordering", ("-created_at", "-id"))
    return Pipeline("search-test", model=Item, filterset_class=ItemFilterSet,
                    search_fields=("name",), tenant_field="tenant",
                    ordering_fields=("created_at", "amount", "score", "id"),
                    fetchers=list(fetchers), register=False, **kwargs)


def engine(**kwargs: Any) -> SearchFetcher:
    kwargs.setdefault("using", "default")
    kwargs.setdefault("handles", "all")
    return SearchFetcher(ItemDocument, **kwargs)


def pks(result: Any) -> list[int]:
    return [obj.pk for obj in result.items]


def orm_pks(request: PipelineRequest) -> list[int]:
    """The page the database gives (SQLite: fine for everything but text case)."""
    return pks(pipeline(ORMFetcher("default")).execute(request))


def reference(request: PipelineRequest) -> list[int]:
    """The page ``Spec.matches()`` gives over every row (PostgreSQL's semantics)."""
    rows = Item.objects.select_related("owner", "category")
    return pks(pipeline(InMemoryFetcher(rows)).execute(request))


CASES = [
    {},
    {"filters": {"status": "queued"}},
    {"filters": {"status_not": "queued", "score__isnull": "false"}},
    {"filters": {"score_not": "1"}},  # NULL scores are kept, as Django's exclude() keeps them
    {"filters": {"amount__gte": "3", "amount__lt": "8", "active": "true"}},
    {"filters": {"name__icontains": "APPLE"}},
    {"filters": {"name__startswith": "red"}},
    {"filters": {"owner_name": "bob"}},
    {"filters": {"category": "null"}},
    {"filters": {"custom": "ANN"}},
    {"filters": {"created_at_after": (BASE + dt.timedelta(microseconds=1500)).isoformat()}},
    {"filters": {"day_after": "2024-03-02", "day_before": "2024-03-03"}},
    {"ordering": ("score",)},
    {"ordering": ("-score", "amount")},
    {"ordering": ("amount", "-created_at"), "filters": {"categories": ["1", "null"]}},
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: repr(c)[:60])
@pytest.mark.parametrize("tenant", ["t1", "t2"])
def test_pages_equal_the_databases(case: dict[str, Any], tenant: str) -> None:
    request = PipelineRequest(tenant=tenant, limit=100, **case)
    assert pks(pipeline(engine()).execute(request)) == reference(request)


@pytest.mark.parametrize("use_cursor", [False, True])
@pytest.mark.parametrize("ordering", [("-created_at",), ("score",), ("-score", "amount")])
def test_walking_every_page_returns_every_row_once(use_cursor: bool, ordering: Any) -> None:
    p = pipeline(engine(), ordering=("-created_at", "-id"))
    seen: list[int] = []
    cursor, offset = None, 0
    for _ in range(50):
        result = p.execute(PipelineRequest(tenant="t1", limit=4, ordering=ordering,
                                           cursor=cursor if use_cursor else None,
                                           offset=None if use_cursor else offset))
        seen.extend(pks(result))
        if not result.has_more:
            break
        cursor, offset = result.next_cursor, offset + 4
    assert seen == orm_pks(PipelineRequest(tenant="t1", limit=100, ordering=ordering))


def test_q_matches_words_in_the_search_fields() -> None:
    result = pipeline(engine()).execute(PipelineRequest(tenant="t1", search="red APPLE",
                                                        limit=100))
    names = [obj.name for obj in result.items]
    assert names and all("red" in n.lower() and "apple" in n.lower() for n in names)
    assert result.sources == ("search",)
    # Words, not substrings: "appl" matches nothing (the database's icontains would).
    assert pipeline(engine()).execute(PipelineRequest(tenant="t1", search="appl")).items == []


def test_hits_are_read_back_with_one_query(django_assert_num_queries: Any) -> None:
    p = pipeline(engine())
    request = PipelineRequest(tenant="t1", limit=10, filters={"owner_name": "bob"})
    with django_assert_num_queries(1):  # in_bulk, owner joined for the re-check
        result = p.execute(request)
    assert len(result.items) == 10
    assert all(obj.owner.name == "bob" for obj in result.items)


def test_instances_from_source_equal_the_database_rows() -> None:
    p = pipeline(engine(using=None))
    result = p.execute(PipelineRequest(tenant="t1", limit=100))
    assert [obj.pk for obj in result.items] == orm_pks(PipelineRequest(tenant="t1", limit=100))
    stored = {obj.pk: obj for obj in Item.objects.all()}
    names = [f.attname for f in Item._meta.concrete_fields]
    for obj in result.items:
        assert obj.get_deferred_fields() == set()
        assert obj._state.adding is False
        assert {n: getattr(obj, n) for n in names} == {n: getattr(stored[obj.pk], n)
                                                      for n in names}


def test_handles_searches_only_by_default() -> None:
    search_only = SearchFetcher(ItemDocument, using="default")
    p = pipeline(search_only, ORMFetcher("default"))
    listed = p.execute(PipelineRequest(tenant="t1", limit=3))
    assert listed.sources == ("default",)
    assert listed.attempts[0].outcome == "declined"
    assert "not a search" in listed.attempts[0].reason
    assert p.execute(PipelineRequest(tenant="t1", search="apple")).sources == ("search",)
    with pytest.raises(ImproperlyConfigured, match="handles"):
        SearchFetcher(ItemDocument, handles="everything")


def test_retrieve_by_pk_within_the_tenant() -> None:
    p = pipeline(engine())
    assert p.execute(PipelineRequest(tenant="t1", pk=7)).item.pk == 7
    assert p.execute(PipelineRequest(tenant="t2", pk=7)).item is None  # another tenant's row


def test_declines_what_it_cannot_serve_exactly() -> None:
    with pytest.raises(NoFetcher) as info:  # a method= filter without a spec: no source can
        pipeline(engine()).execute(PipelineRequest(tenant="t1", filters={"opaque": "x"}))
    assert "cannot be compiled" in info.value.reasons["search"]
    narrow = engine(names={"name": "nowhere"}, name="narrow")
    result = pipeline(narrow, ORMFetcher("default")).execute(
        PipelineRequest(tenant="t1", filters={"name": "x"}))
    assert result.attempts[0].outcome == "declined"
    assert "not exactly searchable" in result.attempts[0].reason
    assert result.sources == ("default",)


def test_deep_offset_pages_need_the_cursor() -> None:
    p = pipeline(engine(max_result_window=10), ORMFetcher("default"))
    assert p.execute(PipelineRequest(tenant="t1", limit=5, offset=4)).sources == ("search",)
    deep = p.execute(PipelineRequest(tenant="t1", limit=5, offset=5))
    assert deep.sources == ("default",)
    assert "max_result_window (10)" in deep.attempts[0].reason
    first = pipeline(engine(max_result_window=10)).execute(PipelineRequest(tenant="t1", limit=9))
    cursor = first.next_cursor
    seen = pks(first)
    while cursor:  # a cursor goes past the window
        page = pipeline(engine(max_result_window=10)).execute(
            PipelineRequest(tenant="t1", limit=9, cursor=cursor))
        seen += pks(page)
        cursor = page.next_cursor
    assert seen == orm_pks(PipelineRequest(tenant="t1", limit=100))
    assert adapter_for(ItemDocument).max_result_window == 10_000


def test_track_total_hits_is_reported() -> None:
    result = pipeline(engine(track_total_hits=True)).execute(
        PipelineRequest(tenant="t1", limit=2, filters={"status": "queued"}))
    expected = Item.objects.filter(tenant="t1", status="queued").count()
    assert result.attempts[0].meta["total_hits"] == expected
    assert result.attempts[0].meta["total_hits_relation"] == "eq"


def test_stale_hits_are_dropped_and_the_page_refilled() -> None:
    p = pipeline(engine())
    request = PipelineRequest(tenant="t1", limit=5)
    before = pks(p.execute(request))
    Item.objects.filter(pk=before[0]).delete()                      # gone from the database
    Item.objects.filter(pk=before[1]).update(tenant="t2")           # no longer the tenant's
    after = p.execute(request)
    assert len(after.items) == 5
    assert pks(after) == orm_pks(request)
    assert not {before[0], before[1]} & set(pks(after))


def test_a_bad_query_is_a_bug_not_an_outage() -> None:
    class Broken(SearchFetcher):
        def get_search_query(self, request: Any) -> dict[str, Any]:
            return {"no_such_query": {}}

    from elasticsearch import BadRequestError

    p = pipeline(Broken(ItemDocument, using="default"), ORMFetcher("default"))
    with pytest.raises(BadRequestError):
        p.execute(PipelineRequest(tenant="t1", search="apple"))


def test_a_missing_index_is_an_outage() -> None:
    adapter_for(ItemDocument).delete_index(adapter_for(ItemDocument).index)
    try:
        p = pipeline(engine(), ORMFetcher("default", search="fulltext"))
        result = p.execute(PipelineRequest(tenant="t1", search="apple", limit=3))
        assert result.sources == ("default",)
        assert result.attempts[0].outcome == "unavailable"
        assert "index missing" in result.attempts[0].reason
    finally:
        recreate(ItemDocument)
        index_objects(make_rows())


def deadline_request(seconds: float, **kwargs: Any) -> Any:
    p = pipeline(engine())
    state = State(pipeline=p, request=PipelineRequest(tenant="t1", **kwargs),
                  deadline=time.monotonic() + seconds)
    validate(state)
    return fetch_request(state)


@pytest.fixture
def silent_engine() -> Iterator[str]:
    """A connection alias to a port that accepts connections and never answers."""
    from elasticsearch.dsl import connections

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    alias = f"silent-{server.getsockname()[1]}"
    connections.create_connection(alias, hosts=f"http://127.0.0.1:{server.getsockname()[1]}",
                                  max_retries=0)
    try:
        yield alias
    finally:
        connections.remove_connection(alias)
        server.close()


def test_the_deadline_is_the_request_timeout(silent_engine: str) -> None:
    fetcher = SearchFetcher(ItemDocument, using="default", handles="all",
                            connection=silent_engine, cooldown=30)
    start = time.monotonic()
    with pytest.raises(SourceUnavailable, match="timed out"):
        fetcher.fetch(deadline_request(0.3))
    assert 0.25 < time.monotonic() - start < 2
    # Cooling down: the engine is not called again for `cooldown` seconds (calling the silent
    # engine would take the whole 5 s).
    request = deadline_request(5)
    start = time.monotonic()
    with pytest.raises(SourceUnavailable, match="not retried for 30s"):
        fetcher.fetch(request)
    assert time.monotonic() - start < 1.0
    # In a pipeline, the database answers in the time that is left.
    p = pipeline(fetcher, ORMFetcher("default"), timeout=1.0)
    assert p.execute(PipelineRequest(tenant="t1", search="apple")).sources == ("default",)


def test_explain_and_health() -> None:
    fetcher = engine()
    details = fetcher.explain(deadline_request(5, search="apple", limit=2))
    assert details["engine"] == "elasticsearch"
    assert details["index"] == adapter_for(ItemDocument).index
    assert '"multi_match"' in details["query"]
    assert '"timeout": "' in details["query"]
    ok, detail = fetcher.health()
    assert ok
    assert "30 documents" in detail


class ItemSearchViewSet(PipelineViewSet):
    serializer_class = ItemSerializer

    def get_pipeline(self) -> Pipeline:
        return pipeline(SearchFetcher(ItemDocument, using="default"),
                        ORMFetcher("default", search="fulltext"),
                        fallback=FallbackMode.SEQUENTIAL)

    def get_tenant(self) -> str | None:
        return self.request.headers.get("X-Tenant")


def test_the_endpoint_serves_q_from_the_engine() -> None:
    view = ItemSearchViewSet.as_view({"get": "list"})
    request = APIRequestFactory().get("/items", {"q": "pear", "limit": 2},
                                      HTTP_X_TENANT="t1")
    response = view(request)
    response.render()
    assert response.status_code == 200, response.content
    assert response["X-Datapipe-Source"] == "search"
    body = json.loads(response.content)
    assert body["count"] == 2 and body["has_more"] is True and body["next_cursor"]
    assert all("pear" in item["name"] for item in body["items"])
    plain = view(APIRequestFactory().get("/items", {"limit": 1}, HTTP_X_TENANT="t1"))
    assert plain["X-Datapipe-Source"] == "default"


def test_system_checks_name_the_pipeline_the_field_and_the_fix() -> None:
    from datapipe_django.fetchers.search import check_search_fetchers
    from datapipe_django.registry import unregister
    from datapipe_django.specs.search import FieldMap

    # A Document mapping some fields only: created_at with milliseconds, name analyzed only.
    lean = SearchFetcher(ItemDocument, using="default", name="lean")
    lean._field_maps[Item] = FieldMap({"properties": {
        "tenant": {"type": "keyword"}, "id": {"type": "long"}, "created_at": {"type": "date"},
        "name": {"type": "text"}, "status": {"type": "keyword"}}}, model=Item)
    Pipeline("search-check", model=Item, filterset_class=ItemFilterSet,
             search_fields=("name", "owner__name"), tenant_field="tenant",
             ordering=("-created_at", "-id"), ordering_fields=("created_at", "amount"),
             fetchers=[lean])
    Pipeline("search-check-ok", model=Item, filterset_class=ItemFilterSet,
             search_fields=("name",), tenant_field="tenant", ordering=("-created_at", "-id"),
             ordering_fields=("created_at", "amount"), fetchers=[engine()])
    try:
        messages = check_search_fetchers()
    finally:
        unregister("search-check")
        unregister("search-check-ok")
    texts = {m.msg: m.id for m in messages if "'search-check'" in m.msg}
    assert not [m for m in messages if "'search-check-ok'" in m.msg]  # ItemDocument passes

    def found(text: str) -> str:
        return next(check_id for msg, check_id in texts.items() if text in msg)

    assert found("fetcher 'lean': ItemDocument cannot serve the ordering field 'amount'") \
        == "datapipe_django.E012"
    assert found("cannot search 'owner__name'") == "datapipe_django.E012"
    assert found("'created_at' as 'date', which keeps milliseconds") == "datapipe_django.W012"
    assert found("filter 'name' cannot be served by ItemDocument") == "datapipe_django.W013"
    assert not any("filter 'status'" in msg for msg in texts)


def test_sparse_fields_become_source_includes_and_an_only_read_back() -> None:
    """``?fields=`` pushed down: the engine returns only those ``_source`` fields (plus the pk,
    ordering and tenant fields), and a read-back from the database selects only them."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    narrow = PipelineRequest(tenant="t1", limit=5, only={"name"})
    state = State(pipeline=pipeline(engine(using=None)), request=narrow)
    validate(state)
    asked = fetch_request(state)
    assert asked.only == ("created_at", "id", "name", "tenant")
    body = engine(using=None).build_body(asked)
    assert body["_source"] == ["created_at", "id", "name", "tenant"]
    full = pipeline(engine(using=None)).execute(PipelineRequest(tenant="t1", limit=5))
    sparse = pipeline(engine(using=None)).execute(narrow)
    assert [o.pk for o in sparse.items] == [o.pk for o in full.items]
    for got, whole in zip(sparse.items, full.items, strict=True):
        assert got.get_deferred_fields() == {"status", "amount", "active", "day", "score",
                                             "category_id", "owner_id"}
        assert (got.name, got.created_at) == (whole.name, whole.created_at)
    with CaptureQueriesContext(connection) as queries:
        from_db = pipeline(engine(using="default")).execute(narrow)
    assert [o.pk for o in from_db.items] == [o.pk for o in full.items]
    select = queries.captured_queries[-1]["sql"]
    assert '"testapp_item"."amount"' not in select and '"testapp_item"."name"' in select


def test_the_total_is_the_engines_exact_hit_count_reported_with_the_page() -> None:
    """``?total=true`` on a chain whose search index holds every row: the page's own search
    asks ``track_total_hits: true`` and its exact total is the answer (no second call)."""
    fetcher = engine()
    calls: list[dict[str, Any]] = []
    original = fetcher.adapter.search

    def counting(body: dict[str, Any], **kwargs: Any) -> Any:
        calls.append(body)
        return original(body, **kwargs)

    fetcher.adapter.search = counting  # type: ignore[method-assign]
    p = pipeline(fetcher, ORMFetcher("default"))
    for request in (PipelineRequest(tenant="t1", search="apple", limit=2, total=True),
                    PipelineRequest(tenant="t1", filters={"status": "queued"}, limit=3,
                                    total=True)):
        calls.clear()
        result = p.execute(request)
        assert result.sources == ("search",) and result.total_exact is True
        assert result.total == Item.objects.filter(
            tenant="t1", **({"name__icontains": "apple"} if request.search else
                            {"status": "queued"})).count()
        assert len(calls) == 1 and calls[0]["track_total_hits"] is True
    # a count of its own, when the page came from elsewhere, is exact too
    assert fetcher.count(fetch_request_of(p, PipelineRequest(tenant="t1", search="red"))) == \
        Item.objects.filter(tenant="t1", name__icontains="red").count()


def fetch_request_of(p: Pipeline, request: PipelineRequest) -> Any:
    state = State(pipeline=p, request=request)
    validate(state)
    return fetch_request(state)
