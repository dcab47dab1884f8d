"""Facets are counts over every row that matches the request, whichever source counts them:
for random rows and random FilterSet parameters, the engines' ``terms`` aggregations (the real
Elasticsearch and OpenSearch nodes), PostgreSQL's ``GROUP BY`` and counts of ``Spec.matches()``
over the rows agree. With ``q`` (whose word matching differs between an analyzer and
PostgreSQL's parser), each source's counts are those of the rows it matches itself, every one
of them, not the page.

(``owner`` is not counted: the Documents store it as an object of the related row, so a key
whose row is missing is not in the index; docs/search.md says so.)

Each example replaces the rows in PostgreSQL and the documents in the indices.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from datapipe_django import Pipeline, PipelineRequest
from datapipe_django.errors import NoFetcher, ValidationFailed
from datapipe_django.fetchers import ORMFetcher, SearchFetcher
from datapipe_django.search.documents import adapter_for
from datapipe_django.search.sync import write_documents
from datapipe_django.specs import Eq, compile_filterset
from tests.conftest import require_alias, require_opensearch
from tests.helpers import facet_counts
from tests.search_documents import (
    HAS_OPENSEARCH,
    ItemDocument,
    ItemOpenSearchDocument,
    recreate,
    search_indices_fixture,  # noqa: F401
)
from tests.specs_data import as_query, make_world, params_strategy
from tests.test_elasticsearch_specs import MAX_ROWS, rows_strategy
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Category, Item

pytestmark = [pytest.mark.search, pytest.mark.postgres,
              pytest.mark.django_db(databases=["default", "primary"])]

FACETS = ("status", "category", "active", "day", "score", "amount")
#: Each example writes the rows to PostgreSQL and both indices, then asks three sources.
PROPERTY_SETTINGS = hsettings(
    max_examples=30, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
DOCUMENTS = (ItemDocument, ItemOpenSearchDocument) if HAS_OPENSEARCH else (ItemDocument,)


@pytest.fixture
def facet_world(search_indices: None) -> None:
    require_alias("primary")
    if HAS_OPENSEARCH:
        require_opensearch()
    recreate(*DOCUMENTS)
    if not Category.objects.using("primary").exists():
        make_world("primary")


def store_and_index(rows: list[Item]) -> None:
    Item.objects.using("primary").all().delete()
    Item.objects.using("primary").bulk_create(rows)
    for document in DOCUMENTS:  # present ids indexed, the others deleted
        report = write_documents(adapter_for(document), range(1, MAX_ROWS + 1),
                                 using="primary", refresh=True)
        assert not report.failed, report.failed


def pipeline(fetcher: Any) -> Pipeline:
    return Pipeline("facets-property", model=Item, filterset_class=ItemFilterSet,
                    search_fields=("name",), tenant_field="tenant", ordering=("-id",),
                    facet_fields=FACETS, fetchers=[fetcher], register=False, timeout=None)


def answer(p: Pipeline, **kwargs: Any) -> tuple[Any, list[Any]] | None:
    """The facets of a one-row page, and every row the source matches (one large page);
    None when the source declines (a filter it cannot serve exactly)."""
    try:
        page = p.execute(PipelineRequest(limit=1, facets=",".join(FACETS), **kwargs))
        every = p.execute(PipelineRequest(limit=100, **kwargs))
    except NoFetcher as exc:
        if "not exactly searchable" not in str(exc):
            raise
        return None
    assert len(every.items) < 100
    return page.facets, every.items


@pytest.mark.usefixtures("facet_world")
@given(data=st.data())
@PROPERTY_SETTINGS
def test_engine_database_and_memory_count_the_same_facets(data: st.DataObject) -> None:
    rows = data.draw(rows_strategy(), label="rows")
    store_and_index(rows)
    sources = {"postgresql": pipeline(ORMFetcher("primary", search="fulltext"))}
    for document in DOCUMENTS:
        sources[adapter_for(document).flavor] = pipeline(
            SearchFetcher(document, using="primary", handles="all"))
    for _ in range(3):
        params = data.draw(st.just({}) | params_strategy(rows, text=False, huge=False),
                           label="params")
        tenant = data.draw(st.sampled_from(["t1", "t2"]), label="tenant")
        words = sorted({w.lower() for r in rows for w in r.name.split()
                        if w.isascii() and w.isalpha()})
        q = data.draw(st.sampled_from([None, None, *words[:4]]), label="q")
        try:
            spec = Eq("tenant", tenant) & compile_filterset(ItemFilterSet, as_query(params))
        except ValidationFailed:
            event("invalid parameters")
            continue
        kwargs = {"tenant": tenant, "filters": as_query(params), "search": q}
        answers = {name: answer(p, **kwargs) for name, p in sources.items()}
        for name, found in answers.items():
            if found is None:
                assert name != "postgresql"
                event("the engine declines")
                continue
            facets, matching = found
            # Every matching row counted, not the page's one.
            assert facets == facet_counts(matching, FACETS), f"{name}: facets of {params!r} q={q!r}"
        if q is None:
            memory = [r for r in Item.objects.using("primary").all() if spec.matches(r)]
            expected = facet_counts(memory, FACETS)
            for name, found in answers.items():
                if found is not None:
                    assert found[0] == expected, f"{name} vs matches(): {params!r}"
            event(f"{'some' if memory else 'no'} rows match")
        else:
            event("with q")
