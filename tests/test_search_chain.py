"""A source whose answer is ``complete`` (a search index of the whole model) ends the chain:
the database sources behind it only serve when it cannot answer, so the engine's matching
rules and the database's never mix in one page. Plain lists, no engine."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datapipe_django import FallbackMode, Pipeline, PipelineRequest, SourcesUnavailable
from datapipe_django.fetchers import FetchRequest, FetchResult
from datapipe_django.test import InMemoryFetcher
from tests.testapp.models import Item

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def item(pk: int, minutes: int) -> Item:
    return Item(id=pk, tenant="t1", name=f"n{pk}", status="queued", amount=0,
                created_at=BASE + dt.timedelta(minutes=minutes), day=BASE.date())


class CompleteFetcher(InMemoryFetcher):
    """Like a search index: whatever it answers is the whole answer."""

    def fetch(self, request: FetchRequest) -> FetchResult:
        result = super().fetch(request)
        result.complete = True
        return result


def pipeline(*fetchers, mode: FallbackMode) -> Pipeline:
    return Pipeline("complete-test", model=Item, fetchers=list(fetchers), fallback=mode,
                    ordering=("-created_at", "-id"), tenant_field="tenant", timeout=None,
                    register=False)


ENGINE_ROWS = [item(1, 1), item(2, 2)]        # what the engine matches
DB_ROWS = [item(1, 1), item(2, 2), item(3, 3)]  # the database also matches row 3 (substring)


@pytest.mark.parametrize("mode", list(FallbackMode))
def test_a_short_complete_page_is_not_topped_up(mode: FallbackMode) -> None:
    engine = CompleteFetcher(ENGINE_ROWS, name="search")
    database = InMemoryFetcher(DB_ROWS, name="db")
    result = pipeline(engine, database, mode=mode).execute(
        PipelineRequest(tenant="t1", limit=10))
    assert [r.pk for r in result.items] == [2, 1]
    assert result.has_more is False
    assert result.sources == ("search",)
    outcomes = {a.source: (a.outcome, a.reason) for a in result.attempts}
    if mode is not FallbackMode.PARALLEL:
        assert outcomes["db"] == ("not_needed", "search answered completely")
        assert database.calls == []


@pytest.mark.parametrize("mode", [FallbackMode.SEQUENTIAL, FallbackMode.FIRST_SUCCESS])
def test_an_empty_complete_answer_is_the_answer(mode: FallbackMode) -> None:
    engine = CompleteFetcher([], name="search")
    database = InMemoryFetcher(DB_ROWS, name="db")
    result = pipeline(engine, database, mode=mode).execute(PipelineRequest(tenant="t1"))
    assert result.items == []
    assert result.sources == ("search",)
    assert database.calls == []


@pytest.mark.parametrize("mode", list(FallbackMode))
def test_the_database_serves_when_the_engine_is_down(mode: FallbackMode) -> None:
    engine = CompleteFetcher(ENGINE_ROWS, name="search", available=False)
    database = InMemoryFetcher(DB_ROWS, name="db")
    result = pipeline(engine, database, mode=mode).execute(
        PipelineRequest(tenant="t1", limit=10))
    assert [r.pk for r in result.items] == [3, 2, 1]
    assert result.sources == ("db",)
    engine.available = database.available = False
    with pytest.raises(SourcesUnavailable):
        pipeline(engine, database, mode=mode).execute(PipelineRequest(tenant="t1"))


def test_sources_before_a_complete_one_are_still_merged() -> None:
    # A cache (or a primary) first, the complete index second: rows merge as usual.
    first = InMemoryFetcher([item(5, 5)], name="first")
    engine = CompleteFetcher(ENGINE_ROWS, name="search")
    after = InMemoryFetcher(DB_ROWS, name="db")
    result = pipeline(first, engine, after, mode=FallbackMode.SEQUENTIAL).execute(
        PipelineRequest(tenant="t1", limit=10))
    assert [r.pk for r in result.items] == [5, 2, 1]
    assert set(result.sources) == {"first", "search"}


@given(rows=st.lists(st.integers(0, 50), max_size=12, unique=True), limit=st.integers(1, 4),
       mode=st.sampled_from(list(FallbackMode)), cursor=st.booleans())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_walking_a_complete_source_returns_its_rows_once(rows, limit, mode, cursor) -> None:
    engine_rows = [item(pk + 1, minutes) for pk, minutes in enumerate(rows)]
    p = pipeline(CompleteFetcher(engine_rows, name="search"),
                 InMemoryFetcher([*engine_rows, item(999, 1000)], name="db"), mode=mode)
    seen: list[int] = []
    token, offset = None, 0
    for _ in range(100):
        result = p.execute(PipelineRequest(tenant="t1", limit=limit,
                                           cursor=token if cursor else None,
                                           offset=None if cursor else offset))
        seen.extend(r.pk for r in result.items)
        if not result.has_more:
            break
        token, offset = result.next_cursor, offset + limit
    expected = sorted(engine_rows, key=lambda r: (r.created_at, r.pk), reverse=True)
    assert seen == [r.pk for r in expected]
