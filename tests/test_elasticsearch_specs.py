"""The contract on the real engine: for random FilterSet parameters over random data,
``to_search()`` on the engine, ``to_q()`` on PostgreSQL and ``matches()`` in memory select the
same rows; and walking every page of a search (offset or cursor, by relevance too, on the
engine and on PostgreSQL's full text) returns each hit once.

Each example replaces the rows in PostgreSQL and the documents in the index (the documents
are written from the PostgreSQL rows, as the index sync writes them).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from datapipe_django import Pipeline, PipelineRequest
from datapipe_django.errors import ValidationFailed
from datapipe_django.fetchers import ORMFetcher, SearchFetcher
from datapipe_django.search.documents import adapter_for
from datapipe_django.search.query import NotSearchable, search_body
from datapipe_django.search.sync import write_documents
from datapipe_django.specs import Eq, compile_filterset
from tests.conftest import require_alias
from tests.search_documents import (
    ItemDocument,
    recreate,
    search_indices_fixture,  # noqa: F401
)
from tests.specs_data import DANGLING, TZS, as_query, make_world, params_strategy
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Category, Item

pytestmark = [pytest.mark.search, pytest.mark.postgres,
              pytest.mark.django_db(databases=["default", "primary"])]

#: Letters the engine folds as PostgreSQL does (see docs/search.md for those it does not),
#: with the characters LIKE and wildcard patterns treat specially.
ALPHABET = "aAbBäÄéÉ _%\\*?"
STATUSES = [s.value for s in Item.Status]
MAX_ROWS = 12
PROPERTY_SETTINGS = hsettings(
    max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def engine_world(search_indices: None) -> None:
    require_alias("primary")
    recreate(ItemDocument)
    if not Category.objects.using("primary").exists():
        make_world("primary")


@st.composite
def rows_strategy(draw: st.DrawFn) -> list[Item]:
    count = draw(st.integers(0, MAX_ROWS))
    words = st.text(ALPHABET, max_size=6)
    return [
        Item(id=pk, tenant=draw(st.sampled_from(["t1", "t2"])), name=draw(words),
             status=draw(st.sampled_from(STATUSES)), amount=draw(st.integers(-4, 4)),
             active=draw(st.booleans()),
             created_at=draw(st.datetimes(dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 4),
                                          timezones=TZS)),
             day=draw(st.dates(dt.date(2024, 1, 1), dt.date(2024, 1, 5))),
             score=draw(st.none() | st.integers(-2, 2)),
             category_id=draw(st.sampled_from([None, 1, 2, 3, DANGLING])),
             owner_id=draw(st.sampled_from([None, 1, 2, 3, DANGLING])))
        for pk in range(1, count + 1)
    ]


def store_and_index(rows: list[Item]) -> None:
    Item.objects.using("primary").all().delete()
    Item.objects.using("primary").bulk_create(rows)
    # Every id an example may use: present rows are indexed, the others deleted.
    report = write_documents(adapter_for(ItemDocument), range(1, MAX_ROWS + 1),
                             using="primary", refresh=True)
    assert not report.failed, report.failed


def engine_pks(spec: Any) -> set[int]:
    adapter = adapter_for(ItemDocument)
    body = search_body(spec=spec, size=100, fields=adapter.field_map(Item), source=False)
    return {int(hit["_id"]) for hit in adapter.search(body)["hits"]["hits"]}


@pytest.mark.usefixtures("engine_world")
@given(data=st.data())
@PROPERTY_SETTINGS
def test_engine_database_and_memory_select_the_same_rows(data: st.DataObject) -> None:
    rows = data.draw(rows_strategy(), label="rows")
    store_and_index(rows)
    for _ in range(4):  # several parameter sets per data set: indexing costs more
        params = data.draw(params_strategy(rows, text=True, huge=True), label="params")
        tenant = data.draw(st.sampled_from(["t1", "t2"]), label="tenant")
        try:
            spec = Eq("tenant", tenant) & compile_filterset(ItemFilterSet, as_query(params))
        except ValidationFailed:
            event("invalid parameters")
            continue
        database = set(Item.objects.using("primary").filter(spec.to_q())
                       .values_list("pk", flat=True))
        memory = {obj.pk for obj in Item.objects.using("primary").select_related("owner")
                  if spec.matches(obj)}
        assert memory == database, f"matches() vs to_q() of {spec!r}"
        try:
            found, declined = engine_pks(spec), ""
        except NotSearchable as exc:
            found, declined = None, exc.reason
        if found is None:
            # Only a case-insensitive value the engine cannot fold as PostgreSQL does.
            assert "case-insensitive" in declined, declined
            event("not searchable exactly")
            continue
        note(f"spec={spec!r} query={spec.to_search(adapter_for(ItemDocument).field_map())!r}")
        event(f"selects {'none' if not database else 'some'}")
        assert found == database, f"to_search() of {spec!r} for {params!r}"


ORDERINGS = [None, ("score",), ("-score", "amount"), ("name", "-created_at"), ("-amount",),
             ("created_at",), ("relevance",)]


def walk(p: Pipeline, *, limit: int, cursor: bool, **kwargs: Any) -> list[int]:
    seen: list[int] = []
    token, offset = None, 0
    for _ in range(MAX_ROWS + 2):
        result = p.execute(PipelineRequest(limit=limit, cursor=token if cursor else None,
                                           offset=None if cursor else offset, **kwargs))
        assert result.sources in ((), ("search",))
        seen.extend(obj.pk for obj in result.items)
        if not result.has_more:
            return seen
        token, offset = result.next_cursor, offset + limit
    raise AssertionError("paging did not end")


def pipeline(fetcher: Any) -> Pipeline:
    return Pipeline("search-walk", model=Item, filterset_class=ItemFilterSet,
                    search_fields=("name",), tenant_field="tenant",
                    ordering=("-created_at", "-id"),
                    ordering_fields=("created_at", "amount", "score", "name", "id"),
                    fetchers=[fetcher], register=False, timeout=None)


@pytest.mark.usefixtures("engine_world")
@given(data=st.data())
@PROPERTY_SETTINGS
def test_walking_search_pages_returns_every_hit_once(data: st.DataObject) -> None:
    rows = data.draw(rows_strategy(), label="rows")
    store_and_index(rows)
    engine = pipeline(SearchFetcher(ItemDocument, using="primary", handles="all"))
    database = pipeline(ORMFetcher("primary"))
    for _ in range(3):
        tenant = data.draw(st.sampled_from(["t1", "t2"]), label="tenant")
        ordering = data.draw(st.sampled_from(ORDERINGS), label="ordering")
        filters = data.draw(st.sampled_from([{}, {"score__isnull": "false"}, {"active": "true"},
                                             {"status_not": "queued"}]), label="filters")
        words = [w for r in rows for w in r.name.split() if w.isalpha()]
        search = data.draw(st.sampled_from([None, *words[:5]]), label="q")
        if search is not None and data.draw(st.booleans(), label="by relevance"):
            ordering = ("relevance",)
        elif ordering == ("relevance",) and search is None:
            ordering = None  # relevance needs q (a 400 otherwise)
        everything = dict(tenant=tenant, ordering=ordering, filters=filters, search=search)
        one_page = engine.execute(PipelineRequest(limit=100, **everything))
        if search is None:  # without q the engine orders exactly as the database
            assert [o.pk for o in one_page.items] == [
                o.pk for o in database.execute(PipelineRequest(limit=100, **everything)).items]
        expected = [o.pk for o in one_page.items]
        limit = data.draw(st.integers(1, 4), label="limit")
        for cursor in (False, True):
            assert walk(engine, limit=limit, cursor=cursor, **everything) == expected
        if ordering == ("relevance",):  # PostgreSQL's ranking walks alike
            event("by relevance")
            ranked = pipeline(ORMFetcher("primary", name="search", search="fulltext"))
            whole = [o.pk for o in ranked.execute(PipelineRequest(limit=100,
                                                                  **everything)).items]
            for cursor in (False, True):
                assert walk(ranked, limit=limit, cursor=cursor, **everything) == whole
