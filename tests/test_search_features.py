"""The search features' rules that need no engine: which sources may serve a relevance or
facets request, the validation of ``ordering=relevance``, ``highlight`` and ``facets``, the
``contains`` highlighter (any database), facet counts of the in-memory test double."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from django.core.exceptions import ImproperlyConfigured

from datapipe_django import Pipeline, PipelineRequest
from datapipe_django.errors import NoFetcher, ValidationFailed
from datapipe_django.fetchers import CachedFetcher, ORMFetcher
from datapipe_django.fetchers.orm import mark_words
from datapipe_django.test import InMemoryFetcher
from tests.testapp.models import Item

BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
ROWS = [Item(id=pk, tenant="t1" if pk < 9 else "t2", name=name, status=status, amount=pk,
             created_at=BASE, day=BASE.date(), active=pk % 2 == 0)
        for pk, name, status in [(1, "red <b>apple</b>", "queued"), (2, "green pear", "queued"),
                                 (3, "Red wine & cheese", "processed"), (4, "apple", "reversed"),
                                 (9, "red apple", "queued")]]


def pipeline(*fetchers, **kwargs) -> Pipeline:
    kwargs.setdefault("facet_fields", ("status", "active"))
    return Pipeline("features-test", model=Item, search_fields=("name",), tenant_field="tenant",
                    ordering=("id",), fetchers=list(fetchers), register=False, timeout=None,
                    **kwargs)


def test_in_memory_facets_count_every_matching_row_of_the_tenant() -> None:
    result = pipeline(InMemoryFetcher(ROWS)).execute(PipelineRequest(
        tenant="t1", facets=["status", "active"], limit=1))
    mine = [r for r in ROWS if r.tenant == "t1"]
    assert result.facets == {
        "status": [{"value": v, "count": n} for v, n in
                   sorted(Counter(r.status for r in mine).items(), key=lambda p: (-p[1], p[0]))],
        "active": [{"value": False, "count": 2}, {"value": True, "count": 2}],  # ties by value
    }
    assert len(result.items) == 1


def test_a_source_that_cannot_rank_declines_relevance() -> None:
    with pytest.raises(NoFetcher, match="cannot rank by relevance"):
        pipeline(InMemoryFetcher(ROWS)).execute(PipelineRequest(
            tenant="t1", search="red", ordering="relevance"))


@pytest.mark.django_db
def test_sqlite_neither_ranks_nor_hides_highlights() -> None:
    Item.objects.bulk_create(ROWS)
    contains = ORMFetcher("default", search="fulltext")  # full text is PostgreSQL's only
    with pytest.raises(NoFetcher, match="cannot rank by relevance"):
        pipeline(contains).execute(PipelineRequest(tenant="t1", search="red",
                                                   ordering="relevance"))
    result = pipeline(contains).execute(PipelineRequest(tenant="t1", search="red",
                                                        highlight="1", facets="status"))
    assert [o.pk for o in result.items] == [1, 3]
    assert result.highlights == [{"name": ["<em>red</em> &lt;b&gt;apple&lt;/b&gt;"]},
                                 {"name": ["<em>Red</em> wine &amp; cheese"]}]
    assert result.facets == {"status": [{"value": "processed", "count": 1},
                                        {"value": "queued", "count": 1}]}


@pytest.mark.django_db
def test_a_cache_serves_scores_highlights_and_facets_uncached() -> None:
    Item.objects.bulk_create(ROWS)
    cached = CachedFetcher(ORMFetcher("default"), ttl=60)
    result = pipeline(cached).execute(PipelineRequest(tenant="t1", search="apple",
                                                      facets="status", highlight=True))
    assert result.attempts[0].meta["cache"] == "bypass"
    assert result.facets == {"status": [{"value": "queued", "count": 1},
                                        {"value": "reversed", "count": 1}]}
    assert result.highlights == [{"name": ["red &lt;b&gt;<em>apple</em>&lt;/b&gt;"]},
                                 {"name": ["<em>apple</em>"]}]


def test_mark_words_escapes_everything_but_the_marks() -> None:
    assert mark_words('<script>alert("x")</script> Apple', ["apple", "script"]) == [
        "&lt;<em>script</em>&gt;alert(&quot;x&quot;)&lt;/<em>script</em>&gt; <em>Apple</em>"]
    assert mark_words("pear", ["apple"]) == []
    assert mark_words(None, ["apple"]) == []


@pytest.mark.parametrize(("request_kwargs", "field"), [
    ({"ordering": "relevance"}, "ordering"),                         # no q
    ({"search": "red", "ordering": "relevance,id"}, "ordering"),      # not alone
    ({"search": "red", "ordering": "-relevance"}, "ordering"),
    ({"facets": "amount"}, "facets"),                                 # not a facet field
    ({"highlight": "sometimes"}, "highlight"),
])
def test_bad_search_parameters_are_400s(request_kwargs, field) -> None:
    memory = InMemoryFetcher(ROWS)
    with pytest.raises(ValidationFailed) as excinfo:
        pipeline(memory).execute(PipelineRequest(tenant="t1", **request_kwargs))
    assert list(excinfo.value.errors) == [field]
    assert memory.calls == []  # nothing was read


def test_facets_need_facet_fields() -> None:
    p = Pipeline("no-facets", model=Item, tenant_field="tenant", fetchers=[InMemoryFetcher()],
                 register=False)
    with pytest.raises(ValidationFailed) as excinfo:
        p.execute(PipelineRequest(tenant="t1", facets="status"))
    assert excinfo.value.errors == {"facets": ["This endpoint counts no facets."]}


@pytest.mark.parametrize("kwargs", [
    {"search_ordering": "score"}, {"facet_fields": ("nope",)}, {"facet_fields": ("tags",)},
    {"facet_size": 0}, {"search_fuzziness": 3}, {"search_fuzziness": "fuzzy"},
])
def test_search_declarations_are_checked(kwargs) -> None:
    with pytest.raises(ImproperlyConfigured):
        pipeline(InMemoryFetcher(), **kwargs)


@pytest.mark.django_db
def test_explain_shows_the_facet_queries_and_the_search_options() -> None:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("datapipe", "explain", "test-items", "q=red&highlight=true&facets=status",
                 "--tenant", "t1", stdout=out, no_color=True)
    text = out.getvalue()
    assert "highlighted, facets status" in text
    assert "facet sql (status):" in text
    assert "GROUP BY" in text and "COUNT(" in text
    out = StringIO()
    call_command("datapipe", "explain", "test-items", "q=red&ordering=relevance", "--tenant",
                 "t1", stdout=out, no_color=True)
    assert "declines: cannot rank by relevance" in out.getvalue()


def test_in_a_tiered_chain_facets_come_from_a_source_that_holds_every_matching_row() -> None:
    from datapipe_django.chain import FetcherChain
    from datapipe_django.specs import Range
    from datapipe_django.stages import fetch_request, validate
    from datapipe_django.state import State

    rows = [Item(id=i, tenant="t1", name="n", status=["a", "b", "b"][i % 3], amount=i,
                 created_at=BASE + dt.timedelta(days=i), day=BASE.date()) for i in range(1, 13)]
    cut = BASE + dt.timedelta(days=8)
    hot = InMemoryFetcher([r for r in rows if r.created_at >= cut], name="hot",
                          holds=Range("created_at", gte=cut))
    archive = InMemoryFetcher(rows, name="archive")
    p = Pipeline("tiered-facets", model=Item, tenant_field="tenant", facet_fields=("status",),
                 ordering=("-created_at", "-id"), fetchers=[hot, archive], register=False)
    everything = p.execute(PipelineRequest(tenant="t1", facets="status", limit=2))
    assert everything.sources == ("archive",)
    assert everything.facets == {"status": [{"value": "b", "count": 8},
                                            {"value": "a", "count": 4}]}
    assert [o.pk for o in everything.items] == [12, 11]
    assert hot.calls == []
    # Without facets the hot tier serves the page it holds.
    assert p.execute(PipelineRequest(tenant="t1", limit=2)).sources == ("hot",)
    # explain says why the hot tier is skipped.
    state = State(pipeline=p, request=PipelineRequest(tenant="t1", facets="status"))
    validate(state)
    steps = {s.source: s for s in FetcherChain(p.fetchers, p.fallback).plan(
        fetch_request(state)).steps}
    assert steps["hot"].action == "skipped"
    assert "holds only some of the matching rows" in steps["hot"].verdict
