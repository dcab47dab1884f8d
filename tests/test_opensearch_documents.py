"""django-opensearch-dsl Documents go through the same query building, fetcher and index sync.

opensearch-py talks to the real OpenSearch node (``scripts/opensearch-node.sh``),
elasticsearch-py to the real Elasticsearch node. The rows, queries and expected pages are those
of the django-elasticsearch-dsl Document, so the two libraries, on two engines, must answer
alike.
"""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

import pytest

from datapipe_django import Pipeline, PipelineRequest
from datapipe_django.errors import SourceUnavailable
from datapipe_django.fetchers import ORMFetcher, SearchFetcher
from datapipe_django.search.documents import adapter_for
from tests.conftest import require_opensearch
from tests.search_documents import (
    ItemDocument,
    ItemOpenSearchDocument,
    empty_indices_fixture,  # noqa: F401
    index_rows,
    search_indices_fixture,  # noqa: F401
)
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Item, Owner

pytestmark = [pytest.mark.search, pytest.mark.django_db, pytest.mark.usefixtures("world")]

BASE = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)


@pytest.fixture
def world(empty_indices: None) -> None:
    require_opensearch()
    Owner.objects.bulk_create([Owner(id=1, name="Zoë"), Owner(id=2, name="max")])
    rows = Item.objects.bulk_create([
        Item(id=pk, tenant="t1", name=["Blue Box", "blue bag", "Red Box"][pk % 3] + f" {pk}",
             status=["queued", "processed"][pk % 2], amount=pk % 4, created_at=BASE
             + dt.timedelta(microseconds=pk // 3), day=BASE.date(),
             score=None if pk % 5 == 0 else pk % 3, owner_id=[None, 1, 2][pk % 3])
        for pk in range(1, 21)
    ])
    index_rows(rows, using="default", document=ItemDocument)
    index_rows(rows, using="default", document=ItemOpenSearchDocument)


def pipeline(document: Any, **kwargs: Any) -> Pipeline:
    return Pipeline("os-test", model=Item, filterset_class=ItemFilterSet,
                    search_fields=("name",), tenant_field="tenant",
                    ordering=("-created_at", "-id"), ordering_fields=("score", "amount"),
                    fetchers=[SearchFetcher(document, handles="all", **kwargs),
                              ORMFetcher("default")], register=False)


@pytest.mark.parametrize("request_kwargs", [
    {"search": "box"},
    {"search": "BLUE", "filters": {"status": "queued"}},
    {"filters": {"custom": "zoË"}},  # folds as UPPER() does, through the folded sub-field
    {"filters": {"score_not": "1"}, "ordering": ("score",)},
    {"ordering": ("-amount",), "filters": {"owner_name": "max"}},
])
@pytest.mark.parametrize("using", [None, "default"])
def test_both_libraries_answer_alike(request_kwargs: dict[str, Any], using: str | None) -> None:
    pages = {}
    for document in (ItemDocument, ItemOpenSearchDocument):
        seen, cursor = [], None
        while True:
            result = pipeline(document, using=using).execute(
                PipelineRequest(tenant="t1", limit=3, cursor=cursor, **request_kwargs))
            assert result.sources == ("search",)
            seen += [obj.pk for obj in result.items]
            if not (cursor := result.next_cursor):
                break
        pages[document] = seen
    assert pages[ItemDocument] == pages[ItemOpenSearchDocument]
    assert pages[ItemDocument]


def test_the_opensearch_adapter() -> None:
    adapter = adapter_for(ItemOpenSearchDocument)
    assert adapter.flavor == "opensearch"
    assert adapter.count() == 20
    assert adapter.field_map().folded_field("name")[0].name == "name.folded"
    ok, detail = SearchFetcher(ItemOpenSearchDocument).health()
    assert ok and "opensearch cluster" in detail


def test_opensearch_errors_are_classified() -> None:
    from opensearchpy import OpenSearch
    from opensearchpy.connection.connections import connections
    from opensearchpy.exceptions import RequestError

    class Broken(SearchFetcher):
        def get_search_query(self, request: Any) -> dict[str, Any]:
            return {"no_such_query": {}}

    p = Pipeline("os-bad", model=Item, search_fields=("name",), tenant_field="tenant",
                 fetchers=[Broken(ItemOpenSearchDocument)], register=False)
    with pytest.raises(RequestError):  # a bad query is a bug
        p.execute(PipelineRequest(tenant="t1", search="box"))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    connections.add_connection("os-down", OpenSearch(hosts=[f"http://127.0.0.1:{port}"],
                                                     max_retries=0))
    try:
        down = SearchFetcher(ItemOpenSearchDocument, connection="os-down")
        p = Pipeline("os-down", model=Item, search_fields=("name",), tenant_field="tenant",
                     fetchers=[down, ORMFetcher("default")], register=False)
        result = p.execute(PipelineRequest(tenant="t1", search="box"))
        assert result.sources == ("default",)
        assert result.attempts[0].reason.startswith("connection failed")
        with pytest.raises(SourceUnavailable):
            down.fetch(_request(p))
    finally:
        connections.remove_connection("os-down")


def _request(p: Pipeline) -> Any:
    from datapipe_django.stages import fetch_request, validate
    from datapipe_django.state import State

    state = State(pipeline=p, request=PipelineRequest(tenant="t1", search="box"), deadline=None)
    validate(state)
    return fetch_request(state)


def test_a_normalizer_that_folds_accents_would_break_iexact_so_it_is_not_used() -> None:
    # On the real node (it has analysis-common): lowercase + asciifolding matches "cafe" with
    # "Café", which Django's iexact (and so to_q() and matches()) does not. The library only
    # trusts a normalizer that folds case alone, so such a field is not used for iexact.
    from opensearchpy.connection.connections import connections

    from datapipe_django.specs import IEq
    from datapipe_django.specs.search import FieldMap

    client = connections.get_connection()
    index = f"{ItemOpenSearchDocument._index._name}-fold-probe"
    analysis = {"normalizer": {
        "ascii": {"type": "custom", "filter": ["lowercase", "asciifolding"]},
        "fold": {"type": "custom", "filter": ["lowercase"]}}}
    mapping = {"properties": {"name": {"type": "keyword", "normalizer": "ascii"},
                              "folded": {"type": "keyword", "normalizer": "fold"}}}
    client.indices.create(index=index, body={"settings": {"analysis": analysis},
                                             "mappings": mapping})
    try:
        client.index(index=index, id="1", body={"name": "Café", "folded": "Café"},
                     refresh=True)

        def hits(field: str, value: str) -> int:
            body = {"query": {"term": {field: {"value": value}}}}
            return int(client.count(index=index, body=body)["count"])

        assert hits("name", "cafe") == 1            # what the engine would answer...
        assert not IEq("name", "cafe").matches(Item(name="Café"))  # ...Django says no
        assert hits("folded", "CAFÉ") == 1 and hits("folded", "cafe") == 0  # agrees
        fields = FieldMap(mapping, model=Item, normalizers=analysis["normalizer"])
        assert fields.folded_field("name") is None          # not trusted for iexact
        assert fields.folded_field("folded") is not None    # trusted
    finally:
        client.indices.delete(index=index)
