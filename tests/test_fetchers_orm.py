"""ORMFetcher against real engines: SQLite, PostgreSQL and MariaDB.

The same rows (ties, NULLs) are written to each alias; walking every page with offsets and
with cursors must return each matching row exactly once, in the order computed in memory.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datapipe_django import FallbackMode, Pipeline, PipelineRequest, SourcesUnavailable
from datapipe_django.fetchers import FetchRequest, ORMFetcher
from datapipe_django.paging import Ordering
from datapipe_django.specs import MatchAll
from datapipe_django.test import InMemoryFetcher
from tests.conftest import engine_databases
from tests.testapp.models import Item

DB = pytest.mark.django_db(databases=engine_databases())

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ORDERINGS = [("-created_at", "-id"), ("score",), ("-score", "name"), ("amount", "-created_at")]


def make(pk, *, minutes=0, score=None, name="n", amount=0, tenant="t1"):
    return Item(id=pk, tenant=tenant, name=name, status="queued", amount=amount,
                created_at=BASE + dt.timedelta(minutes=minutes, microseconds=pk % 3),
                day=BASE.date(), score=score)


def pipeline(alias, **kwargs):
    return Pipeline("orm-test", model=Item, fetchers=[ORMFetcher(alias)],
                    ordering=("-created_at", "-id"),
                    ordering_fields=("created_at", "score", "name", "amount"),
                    tenant_field="tenant", timeout=None, register=False, **kwargs)


def walk(p, *, limit, use_cursor, ordering, tenant="t1"):
    got, cursor, offset = [], None, 0
    for _ in range(200):
        result = p.execute(PipelineRequest(
            tenant=tenant, limit=limit, ordering=ordering,
            cursor=cursor if use_cursor else None, offset=None if use_cursor else offset))
        got.extend(result.items)
        if not result.has_more:
            return got
        cursor, offset = result.next_cursor, offset + limit
    raise AssertionError("paging did not end")


def expected(rows, ordering, tenant="t1"):
    order = Ordering.for_model(Item, ordering)
    return [r.pk for r in sorted((r for r in rows if r.tenant == tenant), key=order.key)]


rows_strategy = st.lists(
    st.tuples(st.integers(0, 5), st.one_of(st.none(), st.integers(0, 3)),
              st.sampled_from(["a", "b", "B"]), st.integers(0, 2),
              st.sampled_from(["t1", "t1", "t2"])),
    max_size=25,
)


@DB
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(values=rows_strategy, limit=st.integers(1, 6), use_cursor=st.booleans(),
       ordering=st.sampled_from(ORDERINGS))
def test_walking_pages_returns_every_row_once_in_order(engine_alias, values, limit,
                                                       use_cursor, ordering):
    Item.objects.using(engine_alias).all().delete()
    rows = [make(i + 1, minutes=m, score=s, name=n, amount=a, tenant=t)
            for i, (m, s, n, a, t) in enumerate(values)]
    Item.objects.using(engine_alias).bulk_create(rows)
    got = walk(pipeline(engine_alias), limit=limit, use_cursor=use_cursor, ordering=ordering)
    assert [r.pk for r in got] == expected(rows, ordering)
    assert {r._state.db for r in got} <= {engine_alias}


@DB
def test_cursor_pages_are_keyset_queries_without_offset(engine_alias):
    Item.objects.using(engine_alias).bulk_create(
        [make(i, minutes=i % 4, score=i % 3 or None) for i in range(1, 40)])
    p = pipeline(engine_alias)
    first = p.execute(tenant="t1", limit=5, ordering=("score",))
    with CaptureQueriesContext(connections[engine_alias]) as queries:
        second = p.execute(tenant="t1", limit=5, ordering=("score",), cursor=first.next_cursor)
    assert len(queries) == 1
    sql = queries[0]["sql"].upper()
    assert "OFFSET" not in sql
    assert "LIMIT 6" in sql
    assert [r.pk for r in second.items] == expected(
        list(Item.objects.using(engine_alias).all()), ("score",))[5:10]


@DB
def test_tenant_filter_is_always_applied(engine_alias):
    Item.objects.using(engine_alias).bulk_create(
        [make(1, tenant="t1"), make(2, tenant="t2"), make(3, tenant="t2")])
    p = pipeline(engine_alias)
    assert [r.pk for r in p.execute(tenant="t2").items] == [2, 3]  # 2 is 2µs later
    assert p.execute(tenant="t1", pk=2).items == []
    assert [r.pk for r in p.execute(tenant="t2", pk=2).items] == [2]


@DB
def test_fetch_request_slices_offset_and_size(engine_alias):
    Item.objects.using(engine_alias).bulk_create([make(i, minutes=i) for i in range(1, 11)])
    fetcher = ORMFetcher(engine_alias)
    request = FetchRequest(request=PipelineRequest(), model=Item, spec=MatchAll(),
                           ordering=Ordering.for_model(Item, ["-created_at"]), size=3, offset=2,
                           tenant_field="tenant", tenant="t1")
    result = fetcher.fetch(request)
    assert [r.pk for r in result.items] == [8, 7, 6]
    assert result.has_more


def test_a_database_that_is_down_falls_back_to_the_next_source(down_alias):
    rows = [make(1, minutes=1), make(2, minutes=2)]
    p = Pipeline("orm-down", model=Item, fetchers=[ORMFetcher(down_alias),
                                                   InMemoryFetcher(rows, name="memory")],
                 ordering=("-created_at",), tenant_field="tenant", register=False)
    result = p.execute(tenant="t1")
    assert [r.pk for r in result.items] == [2, 1]
    assert result.source == "memory"
    down = next(a for a in result.attempts if a.source == "down")
    assert down.outcome == "unavailable" and "OperationalError" in down.reason


def test_only_down_databases_is_sources_unavailable(down_alias):
    for mode in FallbackMode:
        p = Pipeline("orm-down", model=Item, fetchers=[ORMFetcher(down_alias)], fallback=mode,
                     tenant_field="tenant", register=False)
        with pytest.raises(SourcesUnavailable):
            p.execute(tenant="t1")


def test_an_unconfigured_alias_declines():
    p = Pipeline("orm-missing", model=Item, fetchers=[ORMFetcher("nope"),
                                                      InMemoryFetcher([make(1)], name="m")],
                 tenant_field="tenant", register=False)
    result = p.execute(tenant="t1")
    assert result.source == "m"
    assert ("nope", "declined") in {(a.source, a.outcome) for a in result.attempts}
