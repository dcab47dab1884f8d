"""Search that users expect, on every source that searches: ``ordering=relevance``, typo
tolerance, highlights and facets, on the real Elasticsearch node (django-elasticsearch-dsl),
the real OpenSearch node (django-opensearch-dsl) and PostgreSQL full-text search (the
database fallback). The rows live in PostgreSQL; the engines' hits are read back from it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from rest_framework.test import APIRequestFactory

from datapipe_django import FallbackMode, Pipeline, PipelineRequest
from datapipe_django.errors import SourceUnavailable, ValidationFailed
from datapipe_django.fetchers import ORMFetcher, SearchFetcher
from datapipe_django.paging import SCORE_ATTR
from datapipe_django.search.documents import adapter_for
from tests.conftest import require_alias, require_opensearch
from tests.helpers import facet_counts, list_view
from tests.search_documents import (
    ItemDocument,
    ItemOpenSearchDocument,
    index_objects,
    recreate,
    search_indices_fixture,  # noqa: F401
)
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Category, Item

pytestmark = [pytest.mark.search, pytest.mark.postgres,
              pytest.mark.django_db(databases=["default", "primary"]),
              pytest.mark.usefixtures("world")]

BASE = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
LONG = "red " + " ".join(f"w{i}" for i in range(12)) + " apple"  # 50 characters at most
#: pk → name. Three identical "red apple" rows (equal scores: the pk breaks the tie), one
#: where the words are far apart in a long text (ranked lower everywhere), one stored script.
NAMES = {
    1: "green pear", 2: "red apple", 3: LONG, 4: "red apple", 5: "blue plum",
    6: "<script>alert(1)</script> apple tart", 7: "red apple", 8: "apple", 9: "red wine",
    10: "crab apple jelly", 11: "red apple",
}
STATUSES = ["queued", "processed", "reversed"]


def make_rows() -> list[Item]:
    return [Item(id=pk, tenant="t2" if pk == 11 else "t1", name=name,
                 status=STATUSES[pk % 3], amount=pk, created_at=BASE + dt.timedelta(hours=pk),
                 day=(BASE + dt.timedelta(days=pk % 2)).date(), active=pk % 2 == 0,
                 category_id=[None, 1, 2][pk % 3])
            for pk, name in NAMES.items()]


@pytest.fixture(scope="module")
def indexed(search_indices: None) -> None:
    documents = [ItemDocument]
    try:
        require_opensearch()
        documents.append(ItemOpenSearchDocument)
    except pytest.skip.Exception:
        pass
    for document in documents:
        recreate(document)
        index_objects(make_rows(), document)


@pytest.fixture
def world(indexed: None) -> None:
    require_alias("primary")
    Category.objects.using("primary").bulk_create(
        [Category(id=1, name="fruit"), Category(id=2, name="veg")])
    Item.objects.using("primary").bulk_create(make_rows())


BACKENDS = ["elasticsearch", "opensearch", "postgresql"]


@pytest.fixture
def dead_engine() -> Any:
    """An Elasticsearch connection alias to a closed port (the engine is down)."""
    import socket

    from elasticsearch.dsl import connections

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    alias = f"dead-{port}"
    connections.create_connection(alias, hosts=f"http://127.0.0.1:{port}", max_retries=0)
    yield alias
    connections.remove_connection(alias)


def source(backend: str, **kwargs: Any) -> Any:
    """The fetcher that searches on ``backend``, named after it."""
    if backend == "postgresql":
        return ORMFetcher("primary", name=backend, search="fulltext", **kwargs)
    if backend == "opensearch":
        require_opensearch()
    document = ItemDocument if backend == "elasticsearch" else ItemOpenSearchDocument
    return SearchFetcher(document, name=backend, using="primary", **kwargs)


def pipeline(*fetchers: Any, **kwargs: Any) -> Pipeline:
    kwargs.setdefault("ordering", ("-created_at", "-id"))
    return Pipeline("relevance-test", model=Item, filterset_class=ItemFilterSet,
                    search_fields=("name",), tenant_field="tenant",
                    ordering_fields=("created_at", "amount"),
                    facet_fields=("status", "category", "active", "day"),
                    fetchers=list(fetchers), register=False, timeout=None, **kwargs)


def pks(result: Any) -> list[int]:
    return [obj.pk for obj in result.items]


def relevance(p: Pipeline, q: str, **kwargs: Any) -> Any:
    return p.execute(PipelineRequest(tenant="t1", search=q, ordering=("relevance",),
                                     limit=kwargs.pop("limit", 50), **kwargs))


# -- relevance --------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_relevance_is_best_first_with_the_pk_breaking_ties(backend: str) -> None:
    result = relevance(pipeline(source(backend)), "red apple")
    assert result.sources == (backend,)
    scores = [getattr(obj, SCORE_ATTR) for obj in result.items]
    keys = [(-score, obj.pk) for score, obj in zip(scores, result.items, strict=True)]
    assert keys == sorted(keys), "not best first, pk ascending on ties"
    # Identical texts score alike; the words far apart in a long text rank below them.
    assert pks(result)[:3] == [2, 4, 7]
    assert scores[0] == scores[1] == scores[2]
    assert pks(result).index(3) > 2
    assert 11 not in pks(result)  # the other tenant's identical row
    # The same rows as the pipeline's own ordering gives, only in another order.
    plain = pipeline(source(backend)).execute(PipelineRequest(tenant="t1", search="red apple",
                                                              limit=50))
    assert sorted(pks(plain)) == sorted(pks(result))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("use_cursor", [False, True])
def test_walking_relevance_pages_returns_every_row_once_in_order(backend: str,
                                                                 use_cursor: bool) -> None:
    p = pipeline(source(backend))
    expected = pks(relevance(p, "apple"))
    assert len(expected) >= 7
    seen: list[int] = []
    token, offset = None, 0
    for _ in range(20):
        result = relevance(p, "apple", limit=2, cursor=token if use_cursor else None,
                           offset=None if use_cursor else offset)
        seen += pks(result)
        if not result.has_more:
            break
        token, offset = result.next_cursor, offset + 2
    assert seen == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_search_ordering_relevance_is_the_default_with_q(backend: str) -> None:
    p = pipeline(source(backend, **({"handles": "all"} if backend != "postgresql" else {})),
                 search_ordering="relevance")
    ranked = p.execute(PipelineRequest(tenant="t1", search="red apple", limit=50))
    assert pks(ranked) == pks(relevance(p, "red apple"))
    assert pks(ranked)[:3] == [2, 4, 7]
    # Without q, or with an explicit ordering, the pipeline's ordering.
    everything = p.execute(PipelineRequest(tenant="t1", limit=50))
    assert pks(everything) == sorted(pks(everything), reverse=True)
    by_amount = p.execute(PipelineRequest(tenant="t1", search="red apple", limit=50,
                                          ordering=("amount",)))
    assert pks(by_amount) == sorted(pks(by_amount))


def test_relevance_needs_q_and_stands_alone() -> None:
    p = pipeline(source("postgresql"))
    with pytest.raises(ValidationFailed) as excinfo:
        p.execute(PipelineRequest(tenant="t1", ordering=("relevance",)))
    assert "ordering" in excinfo.value.errors
    with pytest.raises(ValidationFailed) as excinfo:
        p.execute(PipelineRequest(tenant="t1", search="apple",
                                  ordering=("relevance", "amount")))
    assert "ordering" in excinfo.value.errors


def test_an_engine_outage_still_answers_best_first_from_postgresql(dead_engine: str) -> None:
    dead = SearchFetcher(ItemDocument, name="search", using="primary", connection=dead_engine)
    database = source("postgresql")
    for mode in FallbackMode:
        p = pipeline(dead, database, fallback=mode)
        result = relevance(p, "red apple")
        assert result.sources == ("postgresql",)
        assert "search" in result.unavailable
        assert pks(result)[:3] == [2, 4, 7]


@pytest.mark.parametrize("mode", list(FallbackMode))
def test_a_relevance_page_is_served_by_one_source(mode: FallbackMode) -> None:
    # A source that cannot rank declines; of two that can, the first that answers serves
    # the whole page, even a short one (its scores do not compare with the other's).
    contains = ORMFetcher("primary", name="contains")
    p = pipeline(contains, source("postgresql"), source("elasticsearch"), fallback=mode)
    result = relevance(p, "apple", limit=3)
    outcomes = {a.source: (a.outcome, a.reason) for a in result.attempts}
    assert outcomes["contains"] == ("declined", "cannot rank by relevance")
    assert result.sources == ("postgresql",)
    if mode is not FallbackMode.PARALLEL:
        assert outcomes["elasticsearch"][0] == "not_needed"
    walked: list[int] = []
    token = None
    while True:
        page = relevance(p, "apple", limit=3, cursor=token)
        assert page.sources == ("postgresql",)
        walked += pks(page)
        if not (token := page.next_cursor):
            break
    assert walked == pks(relevance(pipeline(source("postgresql")), "apple"))


# -- typo tolerance ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("typo", ["aple", "applr", "red appple", "red aple"])
def test_a_one_letter_typo_finds_the_row_when_fuzzy(backend: str, typo: str) -> None:
    exact = pipeline(source(backend)).execute(PipelineRequest(tenant="t1", search=typo))
    assert pks(exact) == []
    fuzzy = pipeline(source(backend), search_fuzziness="AUTO").execute(
        PipelineRequest(tenant="t1", search=typo, limit=50, ordering=("relevance",)))
    assert 2 in pks(fuzzy)
    assert 11 not in pks(fuzzy)
    assert 5 not in pks(fuzzy)  # "blue plum" is no typo of it


@pytest.mark.parametrize("backend", ["elasticsearch", "postgresql"])
def test_the_fetchers_own_fuzziness_switch(backend: str) -> None:
    own = {"fuzziness": "AUTO"} if backend != "postgresql" else {"fuzzy": True}
    assert 8 in pks(pipeline(source(backend, **own)).execute(
        PipelineRequest(tenant="t1", search="aple", limit=50)))
    off = {"fuzziness": 0} if backend != "postgresql" else {"fuzzy": False}
    assert pks(pipeline(source(backend, **off), search_fuzziness="AUTO").execute(
        PipelineRequest(tenant="t1", search="aple", limit=50))) == []


# -- highlights -------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_highlights_mark_the_matches_and_escape_the_rest(backend: str) -> None:
    result = pipeline(source(backend)).execute(PipelineRequest(
        tenant="t1", search="apple", highlight="true", limit=50, ordering=("amount",)))
    assert result.highlights is not None and len(result.highlights) == len(result.items)
    by_pk = dict(zip(pks(result), result.highlights, strict=True))
    assert by_pk[2] == {"name": ["red <em>apple</em>"]}
    assert by_pk[10] == {"name": ["crab <em>apple</em> jelly"]}
    script = by_pk[6]["name"]
    assert len(script) == 1 and "<em>apple</em>" in script[0]
    # Nothing but the marks is markup: the engines escape the stored tag, PostgreSQL's
    # parser drops it from the headline.
    assert "<" not in script[0].replace("<em>", "").replace("</em>", "")
    assert "alert(1)" in script[0]
    if backend != "postgresql":
        assert "&lt;script&gt;" in script[0]
    # Without highlight=true, no highlights.
    plain = pipeline(source(backend)).execute(PipelineRequest(tenant="t1", search="apple"))
    assert plain.highlights is None


# -- facets -----------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("q", [None, "apple"])
def test_facets_count_every_matching_row_of_the_tenant(backend: str, q: str | None) -> None:
    kwargs = {"handles": "all"} if backend != "postgresql" else {}
    names = ("status", "category", "active", "day")
    result = pipeline(source(backend, **kwargs)).execute(PipelineRequest(
        tenant="t1", search=q, facets="status,category,active,day", limit=1,
        filters={"amount__lt": "10"}))
    assert result.sources == (backend,)
    matching = [r for r in Item.objects.using("primary").filter(tenant="t1", amount__lt=10)
                if q is None or q in r.name.split()]
    assert result.facets == facet_counts(matching, names)
    assert len(result.items) == 1  # counted over every matching row, not the page


def test_facets_come_from_the_database_when_the_engine_is_down(dead_engine: str) -> None:
    dead = SearchFetcher(ItemDocument, name="search", using="primary", connection=dead_engine,
                         handles="all")
    p = pipeline(dead, ORMFetcher("primary", name="db"))
    result = p.execute(PipelineRequest(tenant="t1", facets="status", search="apple"))
    assert result.sources == ("db",)
    matching = [r for r in Item.objects.using("primary").filter(tenant="t1")
                if "apple" in r.name.lower()]  # the database's q: substrings
    assert result.facets == facet_counts(matching, ("status",))


def test_a_partial_index_does_not_count_facets() -> None:
    partial = SearchFetcher(ItemDocument, name="search", using="primary", complete=False,
                            handles="all")
    p = pipeline(partial, ORMFetcher("primary", name="db"))
    result = p.execute(PipelineRequest(tenant="t1", facets="status"))
    outcomes = {a.source: (a.outcome, a.reason) for a in result.attempts}
    assert outcomes["search"] == ("declined", "cannot count facets")
    assert result.sources == ("db",)


@pytest.mark.parametrize(("params", "field"), [
    ({"facets": "amount"}, "facets"),
    ({"facets": "status,nope"}, "facets"),
    ({"highlight": "maybe"}, "highlight"),
])
def test_bad_highlight_and_facets_are_400s(params: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationFailed) as excinfo:
        pipeline(source("postgresql")).execute(PipelineRequest(tenant="t1", **params))
    assert list(excinfo.value.errors) == [field]


# -- the endpoint -----------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_the_endpoint_body_carries_highlights_and_facets(backend: str) -> None:
    view = list_view(pipeline(source(backend)))
    response = view(APIRequestFactory().get("/items", {
        "q": "apple", "ordering": "relevance", "highlight": "true",
        "facets": "status,active", "limit": "3"}))
    response.render()
    assert response.status_code == 200, response.content
    body = json.loads(response.content)
    assert response["X-Datapipe-Source"] == backend
    assert [item["id"] for item in body["items"]] == pks(relevance(
        pipeline(source(backend)), "apple", limit=3))
    for item in body["items"]:
        assert any("<em>" in f for f in item["_highlights"]["name"])
    matching = [r for r in Item.objects.using("primary").filter(tenant="t1")
                if "apple" in r.name.split()]
    assert body["facets"] == json.loads(json.dumps(facet_counts(matching, ("status", "active"))))
    # The cursor walks on by relevance.
    following = view(APIRequestFactory().get("/items", {
        "q": "apple", "ordering": "relevance", "cursor": body["next_cursor"], "limit": "50"}))
    following.render()
    rest = [item["id"] for item in json.loads(following.content)["items"]]
    assert [item["id"] for item in body["items"]] + rest == pks(relevance(
        pipeline(source(backend)), "apple"))


def test_the_endpoint_refuses_relevance_without_q() -> None:
    response = list_view(pipeline(source("postgresql")))(
        APIRequestFactory().get("/items", {"ordering": "relevance"}))
    response.render()
    assert response.status_code == 400
    assert "ordering" in json.loads(response.content)


def test_the_engine_body_has_scoring_highlight_and_aggregations() -> None:
    from datapipe_django.stages import fetch_request, validate
    from datapipe_django.state import State

    p = pipeline(source("elasticsearch", fuzziness="AUTO"))
    state = State(pipeline=p, request=PipelineRequest(
        tenant="t1", search="red aple", ordering=("relevance",), highlight=True,
        facets="status"))
    validate(state)
    fetcher = p.fetchers[0]
    body = fetcher.build_body(fetch_request(state))
    assert body["sort"] == [{"_score": {"order": "desc"}},
                            {"id": {"order": "asc", "missing": "_last"}}]
    assert body["highlight"]["fields"] == {"name": {}}
    assert body["aggs"]["status"]["terms"]["field"] == "status"
    assert {m["multi_match"]["fuzziness"] for m in body["query"]["bool"]["must"][0]["bool"][
        "must"]} == {"AUTO"}
    explained = fetcher.explain(fetch_request(state))
    assert '"_score"' in explained["query"] and '"aggs"' in explained["query"]
    response = adapter_for(ItemDocument).search(body)
    assert response["hits"]["hits"], "the engine accepts the body"


def test_a_dead_engine_is_unavailable_for_relevance_too(dead_engine: str) -> None:
    from datapipe_django.stages import fetch_request, validate
    from datapipe_django.state import State

    dead = SearchFetcher(ItemDocument, name="search", using="primary", connection=dead_engine)
    state = State(pipeline=pipeline(dead), request=PipelineRequest(
        tenant="t1", search="apple", ordering=("relevance",)))
    validate(state)
    asked = fetch_request(state)
    with pytest.raises(SourceUnavailable):
        dead.fetch(asked)


def test_a_facet_field_the_document_cannot_count_is_a_warning() -> None:
    p = Pipeline("facet-check", model=Item, search_fields=("name",), tenant_field="tenant",
                 facet_fields=("status", "created_at", "name"),
                 fetchers=[SearchFetcher(ItemDocument, using="primary")], register=False)
    warnings = [m for m in p.fetchers[0].check(p) if m.id == "datapipe_django.W013"]
    # A datetime is not counted; analyzed text is, by its keyword sub-field (name.raw).
    assert [m.msg.split("facet field ")[1].split(" ")[0] for m in warnings] == ["'created_at'"]
