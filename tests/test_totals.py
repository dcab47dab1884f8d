"""``?total=true``: an exact count of every matching row, or ``"total_exact": false``.

Counted with ``COUNT(*)`` on the one source that can serve the request (each database engine),
with the engine's exact hit count on a search index that holds every row (tests/
test_fetchers_search.py), never summed over sources that may hold the same rows."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIRequestFactory

from datapipe_django import FallbackMode, Pipeline, PipelineRequest
from datapipe_django.fetchers import CachedFetcher, ORMFetcher
from datapipe_django.specs import Range
from datapipe_django.test import InMemoryFetcher
from tests.conftest import engine_databases
from tests.helpers import list_view
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Item

DB = pytest.mark.django_db(databases=engine_databases())
BASE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def make_rows() -> list[Item]:
    return [Item(id=i, tenant="t1" if i % 4 else "t2", name=f"item {i % 7}",
                 status=["queued", "processed", "reversed"][i % 3], amount=(i * 37) % 50,
                 active=i % 2 == 0, created_at=BASE + dt.timedelta(minutes=i // 3),
                 day=BASE.date(), score=i % 5 or None) for i in range(1, 41)]


def pipeline(*fetchers: Any, **kwargs: Any) -> Pipeline:
    return Pipeline("totals", model=Item, filterset_class=ItemFilterSet, search_fields=("name",),
                    tenant_field="tenant", ordering=("-created_at", "-id"),
                    ordering_fields=("created_at", "amount", "id"), fetchers=list(fetchers),
                    register=False, **kwargs)


@pytest.fixture(params=engine_databases())
def alias(request: pytest.FixtureRequest) -> str:
    Item.objects.using(request.param).bulk_create(make_rows())
    return request.param


def expected(alias: str, **filters: Any) -> int:
    return Item.objects.using(alias).filter(tenant="t1", **filters).count()


@DB
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=st.sampled_from([None, "queued", "processed"]), least=st.integers(0, 60),
       q=st.sampled_from([None, "item", "item 3"]), limit=st.integers(1, 12),
       offset=st.integers(0, 40), cursor_page=st.booleans())
def test_the_total_is_every_matching_row_whatever_the_page(alias, status, least, q, limit,
                                                           offset, cursor_page):
    p = pipeline(ORMFetcher(alias))
    filters: dict[str, Any] = {"amount__gte": least}
    if status:
        filters["status"] = status
    first = p.execute(PipelineRequest(filters=filters, tenant="t1", search=q, limit=limit,
                                      total=True))
    lookups = {"amount__gte": least, **({"status": status} if status else {}),
               **({"name__icontains": q} if q else {})}
    assert first.total_exact is True and first.total == expected(alias, **lookups)
    if cursor_page and first.next_cursor:
        later = p.execute(PipelineRequest(filters=filters, tenant="t1", search=q, limit=limit,
                                          cursor=first.next_cursor, total=True))
    else:
        later = p.execute(PipelineRequest(filters=filters, tenant="t1", search=q, limit=limit,
                                          offset=offset, total=True))
    assert later.total == first.total


@DB
def test_the_count_is_one_count_query(alias):
    p = pipeline(ORMFetcher(alias))
    with CaptureQueriesContext(connections[alias]) as queries:
        result = p.execute(PipelineRequest(filters={"status": "queued"}, tenant="t1", limit=3,
                                           total=True))
    assert result.total == expected(alias, status="queued") and result.count == 3
    sqls = [q["sql"] for q in queries.captured_queries if "testapp_item" in q["sql"]]
    assert len(sqls) == 2 and "COUNT(*)" in sqls[1].upper()
    assert "ORDER BY" not in sqls[1].upper() and "LIMIT" not in sqls[1].upper()
    with CaptureQueriesContext(connections[alias]) as queries:
        plain = p.execute(PipelineRequest(tenant="t1", limit=3))
    assert plain.total is None and plain.total_exact is None
    assert not any("COUNT(" in q["sql"].upper() for q in queries.captured_queries)


@DB
def test_overlapping_sources_give_no_total_but_say_so(alias):
    rows = make_rows()
    p = pipeline(ORMFetcher(alias), InMemoryFetcher(rows, name="memory"))
    result = p.execute(PipelineRequest(tenant="t1", limit=5, total=True))
    assert result.total is None and result.total_exact is False
    assert "memory" in result.total_reason and alias in result.total_reason
    assert result.count == 5  # the page is served as usual


@DB
def test_the_one_source_that_can_serve_counts_when_the_others_decline(alias):
    rows = make_rows()
    recent = InMemoryFetcher(rows, name="recent",
                             can_handle=lambda r: r.ordering.fields[0].name == "created_at")
    p = pipeline(recent, CachedFetcher(ORMFetcher(alias), ttl=30))
    by_amount = p.execute(PipelineRequest(tenant="t1", ordering="amount", limit=2, total=True))
    assert (by_amount.total, by_amount.total_exact) == (expected(alias), True)
    assert p.execute(PipelineRequest(tenant="t1", limit=2, total=True)).total_exact is False


def test_a_source_down_when_counting_leaves_the_page_and_says_why():
    rows = make_rows()
    alone = InMemoryFetcher(rows, name="memory")
    p = pipeline(alone, fallback=FallbackMode.SEQUENTIAL)
    ok = p.execute(PipelineRequest(tenant="t1", limit=2, total=True))
    assert ok.total == sum(1 for r in rows if r.tenant == "t1")

    class DownWhenCounting(InMemoryFetcher):
        def count(self, request):
            self.available = False
            return super().count(request)

    flaky = pipeline(DownWhenCounting(rows, name="memory"))
    result = flaky.execute(PipelineRequest(tenant="t1", limit=2, total=True))
    assert result.count == 2 and result.total is None and result.total_exact is False
    assert "memory unavailable" in result.total_reason


def test_the_pipeline_default_and_the_request_override():
    rows = make_rows()
    p = pipeline(InMemoryFetcher(rows), total=True)
    assert p.execute(PipelineRequest(tenant="t1", limit=1)).total_exact is True
    assert p.execute(PipelineRequest(tenant="t1", limit=1, total=False)).total_exact is None
    assert p.execute(PipelineRequest(tenant="t1", pk=1)).total_exact is None  # a retrieve


# -- the REST body ------------------------------------------------------------------------------

def get(p: Pipeline, params: dict[str, Any]) -> Any:
    response = list_view(p)(APIRequestFactory().get("/items", params))
    response.render()
    return response


@DB
def test_the_body_has_the_total_after_the_pages_count(alias):
    p = pipeline(ORMFetcher(alias))
    body = get(p, {"total": "true", "limit": 4}).data
    assert list(body)[:4] == ["entity", "count", "total", "total_exact"]
    assert (body["count"], body["total"], body["total_exact"]) == (4, expected(alias), True)
    assert "total" not in get(p, {"limit": 4}).data
    assert "total" not in get(p, {"limit": 4, "total": "0"}).data
    spread = pipeline(ORMFetcher(alias), InMemoryFetcher(make_rows(), name="memory"))
    body = get(spread, {"total": "yes"}).data
    assert "total" not in body and body["total_exact"] is False
    bad = get(p, {"total": "maybe"})
    assert bad.status_code == 400 and bad.data == {"total": ["Must be a valid boolean."]}


# -- tiered chains: the sum over disjoint tiers --------------------------------------------------

TIERED = pytest.mark.django_db(databases=["default", "archive"])


def tiered(cutoff: dt.datetime, *, hot_available: bool = True,
           mirror: bool = False) -> Pipeline:
    """A hot tier holding the rows since ``cutoff`` (SQLite, only those rows), the archive
    holding every row (MariaDB); with ``mirror``, an in-memory copy of the hot tier that stands
    in for it."""
    from datapipe_django.specs import Range

    hot_rows = [r for r in make_rows() if r.created_at >= cutoff]
    hot: Any = ORMFetcher("default", name="hot", holds=Range("created_at", gte=cutoff))
    fetchers: list[Any] = [hot]
    if not hot_available:
        fetchers = [InMemoryFetcher(hot_rows, name="hot", available=False,
                                    holds=Range("created_at", gte=cutoff))]
    if mirror:
        fetchers.append(InMemoryFetcher(hot_rows, name="hot-copy", mirror_of="hot"))
    fetchers.append(ORMFetcher("archive", name="archive"))
    return pipeline(*fetchers)


def seed_tiers(cutoff: dt.datetime) -> None:
    rows = make_rows()
    Item.objects.using("default").bulk_create([r for r in rows if r.created_at >= cutoff])
    Item.objects.using("archive").bulk_create(make_rows())


@TIERED
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(minutes=st.integers(0, 14), status=st.sampled_from([None, "queued", "reversed"]),
       least=st.integers(0, 50), limit=st.integers(1, 15), offset=st.integers(0, 30),
       ordering=st.sampled_from([None, "amount", "-amount"]))
def test_a_tiered_total_is_the_sum_over_disjoint_tiers(minutes, status, least, limit, offset,
                                                       ordering):
    from tests.conftest import require_alias

    require_alias("archive")
    cutoff = BASE + dt.timedelta(minutes=minutes)
    Item.objects.using("default").all().delete()
    Item.objects.using("archive").all().delete()
    seed_tiers(cutoff)
    filters: dict[str, Any] = {"amount__gte": least, **({"status": status} if status else {})}
    result = tiered(cutoff).execute(PipelineRequest(
        filters=filters, tenant="t1", limit=limit, offset=offset, ordering=ordering,
        total=True))
    assert result.total_exact is True, result.total_reason
    assert result.total == expected("archive", **filters)  # the archive holds every row


@TIERED
def test_a_tier_down_is_counted_on_its_mirror_and_else_there_is_no_total():
    from tests.conftest import require_alias

    require_alias("archive")
    cutoff = BASE + dt.timedelta(minutes=7)
    seed_tiers(cutoff)
    request = PipelineRequest(tenant="t1", limit=5, total=True)
    served = tiered(cutoff).execute(request)
    assert (served.total, served.total_exact) == (expected("archive"), True)
    copy = tiered(cutoff, hot_available=False, mirror=True).execute(request)
    assert (copy.total, copy.total_exact) == (expected("archive"), True)
    down = tiered(cutoff, hot_available=False).execute(request)
    assert down.total is None and down.total_exact is False
    assert "hot unavailable" in down.total_reason


def test_a_sliding_holds_is_evaluated_once_per_execution_with_its_total():
    """``holds`` (a callable: a sliding window) is evaluated once per execution: the total is
    planned with the holds the page was served with, not a second evaluation."""
    rows = make_rows()
    calls: list[int] = []

    def window() -> Any:
        calls.append(1)
        return Range("created_at", gte=BASE + dt.timedelta(minutes=7))

    hot = InMemoryFetcher([r for r in rows if r.created_at >= BASE + dt.timedelta(minutes=7)],
                          name="hot", holds=window)
    p = pipeline(hot, InMemoryFetcher(rows, name="archive"))
    result = p.execute(PipelineRequest(tenant="t1", limit=5, offset=3, total=True))
    assert len(calls) == 1
    assert (result.total, result.total_exact) == (
        len([r for r in rows if r.tenant == "t1"]), True)
