"""The fetcher chain on plain lists: modes, merge, dedupe, fallback, exact paging.

No database: sources are :class:`datapipe_django.test.InMemoryFetcher` over unsaved rows.
"""

from __future__ import annotations

import copy
import datetime as dt
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datapipe_django import (
    DeadlineExceeded,
    FallbackMode,
    NoFetcher,
    Pipeline,
    PipelineRequest,
    SourcesUnavailable,
    ValidationFailed,
)
from datapipe_django.chain import merge_streams
from datapipe_django.errors import SourceUnavailable
from datapipe_django.fetchers import BaseFetcher, FetchRequest, FetchResult
from datapipe_django.paging import Ordering
from datapipe_django.test import InMemoryFetcher
from tests.testapp.models import Item

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ORDERINGS = [("-created_at", "-id"), ("score",), ("-score", "name"), ("amount", "-created_at")]


def item(pk: int, *, tenant: str = "t1", minutes: int = 0, score: int | None = None,
         name: str = "n", amount: int = 0) -> Item:
    return Item(id=pk, tenant=tenant, name=name, status="queued", amount=amount,
                created_at=BASE + dt.timedelta(minutes=minutes), day=BASE.date(), score=score)


def pipeline(*fetchers, mode=FallbackMode.SEQUENTIAL, ordering=("-created_at", "-id"),
             **kwargs) -> Pipeline:
    kwargs.setdefault("timeout", None)
    return Pipeline("chain-test", model=Item, fetchers=list(fetchers), fallback=mode,
                    ordering=ordering, ordering_fields=("created_at", "score", "name", "amount"),
                    tenant_field="tenant", register=False, **kwargs)


def walk(p: Pipeline, *, limit: int, use_cursor: bool, ordering=None, tenant="t1",
         max_pages: int = 500) -> list[Item]:
    rows: list[Item] = []
    cursor, offset = None, 0
    for _ in range(max_pages):
        result = p.execute(PipelineRequest(tenant=tenant, limit=limit, ordering=ordering,
                                           cursor=cursor if use_cursor else None,
                                           offset=None if use_cursor else offset))
        assert len(result.items) <= limit
        rows.extend(result.items)
        if not result.has_more:
            assert result.next_cursor is None
            return rows
        assert result.next_cursor
        cursor, offset = result.next_cursor, offset + limit
    raise AssertionError("paging did not end")


def expected(rows: list[Item], ordering, tenant="t1") -> list[int]:
    order = Ordering.for_model(Item, ordering)
    unique = {r.pk: r for r in rows if r.tenant == tenant}
    return [r.pk for r in sorted(unique.values(), key=order.key)]


# -- merge --------------------------------------------------------------------------------------

def test_merge_keeps_the_higher_priority_row_and_orders_the_union():
    order = Ordering.for_model(Item, ["-created_at"])
    high = [item(3, minutes=3, name="primary"), item(1, minutes=1, name="primary")]
    low = [item(3, minutes=3, name="archive"), item(2, minutes=2), item(1, minutes=1,
                                                                        name="archive")]
    merged = merge_streams([high, low], order)
    assert [r.pk for r in merged] == [3, 2, 1]
    assert [r.name for r in merged if r.pk in (1, 3)] == ["primary", "primary"]


def test_ordering_puts_nulls_last_in_both_directions_and_breaks_ties_by_pk():
    rows = [item(1, score=None), item(2, score=5), item(3, score=1), item(4, score=5)]
    asc = Ordering.for_model(Item, ["score"])
    desc = Ordering.for_model(Item, ["-score"])
    assert [r.pk for r in sorted(rows, key=asc.key)] == [3, 2, 4, 1]
    assert [r.pk for r in sorted(rows, key=desc.key)] == [4, 2, 3, 1]
    assert [str(f) for f in desc.fields] == ["-score", "-id"]


# -- modes --------------------------------------------------------------------------------------

def test_sequential_stops_when_the_first_source_fills_the_page():
    rows = [item(i, minutes=i) for i in range(1, 21)]
    a, b = InMemoryFetcher(rows, name="a"), InMemoryFetcher(rows, name="b")
    result = pipeline(a, b).execute(tenant="t1", limit=5)
    assert [r.pk for r in result.items] == [20, 19, 18, 17, 16]
    assert result.source == "a" and result.has_more
    assert b.calls == []
    assert a.calls[0].size == 6  # offset + limit + 1


def test_sequential_completes_a_short_page_from_the_next_source():
    recent = [item(i, minutes=i) for i in range(8, 11)]
    archive = [item(i, minutes=i) for i in range(1, 11)]
    result = pipeline(InMemoryFetcher(recent, name="appdb"),
                      InMemoryFetcher(archive, name="archive")).execute(tenant="t1", limit=5)
    assert [r.pk for r in result.items] == [10, 9, 8, 7, 6]
    assert result.sources == ("appdb", "archive")
    assert result.has_more


def test_sequential_falls_back_when_a_source_is_unavailable():
    rows = [item(i, minutes=i) for i in range(1, 4)]
    result = pipeline(InMemoryFetcher(rows, name="a", available=False),
                      InMemoryFetcher(rows, name="b")).execute(tenant="t1", limit=10)
    assert [r.pk for r in result.items] == [3, 2, 1]
    assert result.source == "b"
    outcomes = {a.source: (a.outcome, a.reason) for a in result.attempts}
    assert outcomes["a"] == ("unavailable", "switched off")


def test_first_success_serves_the_first_source_with_rows_alone():
    empty = InMemoryFetcher([], name="empty")
    a = InMemoryFetcher([item(1, minutes=1)], name="a")
    b = InMemoryFetcher([item(2, minutes=2)], name="b")
    result = pipeline(empty, a, b, mode=FallbackMode.FIRST_SUCCESS).execute(tenant="t1")
    assert [r.pk for r in result.items] == [1]
    assert result.source == "a"
    # b was only probed for rows after the page (to set has_more), and it has none after pk 1.
    assert not result.has_more
    assert [c.size for c in b.calls] == [1]


def test_first_success_probes_past_a_source_without_later_rows():
    """The page runs out in the first source; the next one holds nothing after it but the
    one after that does: there is a next page (found by hypothesis)."""
    newest = InMemoryFetcher([item(4, minutes=4)], name="a")
    empty = InMemoryFetcher([], name="b")
    older = InMemoryFetcher([item(3, minutes=3), item(2, minutes=2)], name="c")
    p = pipeline(newest, empty, older, mode=FallbackMode.FIRST_SUCCESS)
    assert p.execute(tenant="t1", limit=1).has_more
    assert [r.pk for r in walk(p, limit=1, use_cursor=True)] == [4, 3, 2]


def test_parallel_queries_every_source_at_once_and_merges():
    started = threading.Barrier(3, timeout=2)

    class Slow(InMemoryFetcher):
        def fetch(self, request):
            started.wait()  # all three must be running at the same time
            return super().fetch(request)

    sources = [Slow([item(i, minutes=i)], name=f"s{i}") for i in (1, 2, 3)]
    result = pipeline(*sources, mode=FallbackMode.PARALLEL).execute(tenant="t1")
    assert [r.pk for r in result.items] == [3, 2, 1]
    assert set(result.sources) == {"s1", "s2", "s3"}


def test_every_source_down_is_sources_unavailable_with_reasons():
    p = pipeline(InMemoryFetcher(name="a", available=False),
                 InMemoryFetcher(name="b", available=False))
    with pytest.raises(SourcesUnavailable) as info:
        p.execute(tenant="t1")
    assert info.value.reasons == {"a": "switched off", "b": "switched off"}
    assert info.value.status_code == 503


def test_a_bug_in_a_fetcher_propagates_instead_of_falling_back():
    class Broken(BaseFetcher):
        name = "broken"

        def fetch(self, request):
            raise TypeError("a bug")

    fallback = InMemoryFetcher([item(1)], name="b")
    for mode in FallbackMode:
        with pytest.raises(TypeError, match="a bug"):
            pipeline(Broken(), fallback, mode=mode).execute(tenant="t1")


def test_no_candidate_source_is_no_fetcher():
    p = pipeline(InMemoryFetcher(name="a", can_handle=lambda r: False))
    with pytest.raises(NoFetcher) as info:
        p.execute(tenant="t1")
    assert "a" in info.value.reasons


def test_parallel_abandons_a_source_past_the_deadline():
    release = threading.Event()

    class Hanging(BaseFetcher):
        name = "hanging"

        def fetch(self, request):
            release.wait(30)
            return FetchResult([])

    try:
        # `fast` must answer within the budget; `hanging` answers only when released.
        p = pipeline(Hanging(), InMemoryFetcher([item(1)], name="fast"),
                     mode=FallbackMode.PARALLEL, timeout=0.5)
        started = time.monotonic()
        result = p.execute(tenant="t1")
        assert time.monotonic() - started < 2.0
        assert [r.pk for r in result.items] == [1]
        assert ("hanging", "timeout") in {(a.source, a.outcome) for a in result.attempts}
        with pytest.raises(DeadlineExceeded):
            pipeline(Hanging(), mode=FallbackMode.PARALLEL, timeout=0.2).execute(tenant="t1")
    finally:
        release.set()


def test_sequential_raises_deadline_exceeded_when_the_budget_is_gone():
    class Slow(BaseFetcher):
        name = "slow"

        def fetch(self, request):
            time.sleep(0.15)
            raise SourceUnavailable(self.name, "timed out")

    p = pipeline(Slow(), InMemoryFetcher([item(1)], name="b"), timeout=0.1)
    with pytest.raises(DeadlineExceeded):
        p.execute(tenant="t1")


def test_cursor_is_signed_and_bound_to_its_ordering():
    rows = [item(i, minutes=i) for i in range(1, 6)]
    p = pipeline(InMemoryFetcher(rows, name="a"))
    first = p.execute(tenant="t1", limit=2)
    second = p.execute(tenant="t1", limit=2, cursor=first.next_cursor)
    assert [r.pk for r in second.items] == [3, 2]
    with pytest.raises(ValidationFailed) as info:
        p.execute(tenant="t1", limit=2, cursor=first.next_cursor[:-2] + "xx")
    assert "cursor" in info.value.errors
    with pytest.raises(ValidationFailed) as info:
        p.execute(tenant="t1", limit=2, cursor=first.next_cursor, ordering=("amount",))
    assert "cursor" in info.value.errors


def test_next_cursor_is_given_for_offset_pages_too():
    rows = [item(i, minutes=i) for i in range(1, 6)]
    p = pipeline(InMemoryFetcher(rows, name="a"))
    page = p.execute(tenant="t1", limit=2, offset=2)
    assert [r.pk for r in page.items] == [3, 2]
    follow = p.execute(tenant="t1", limit=2, cursor=page.next_cursor)
    assert [r.pk for r in follow.items] == [1]
    assert not follow.has_more and follow.next_cursor is None


# -- properties ---------------------------------------------------------------------------------

row_values = st.tuples(
    st.integers(0, 6),                          # minutes: many ties
    st.one_of(st.none(), st.integers(0, 4)),    # score: NULLs and ties
    st.sampled_from(["a", "b", "c"]),           # name
    st.integers(0, 3),                          # amount
    st.sampled_from(["t1", "t1", "t2"]),        # tenant
)


def build_rows(values) -> list[Item]:
    return [item(i + 1, minutes=m, score=s, name=n, amount=a, tenant=t)
            for i, (m, s, n, a, t) in enumerate(values)]


PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(values=st.lists(row_values, max_size=30), data=st.data(),
       limit=st.integers(1, 7), use_cursor=st.booleans(), n_sources=st.integers(1, 3),
       ordering=st.sampled_from(ORDERINGS))
def test_parallel_walk_returns_every_row_once_in_order(values, data, limit, use_cursor,
                                                       n_sources, ordering):
    rows = build_rows(values)
    disjoint = data.draw(st.booleans(), label="disjoint")
    holdings: list[list[Item]] = [[] for _ in range(n_sources)]
    for row in rows:
        if disjoint:
            owners = [data.draw(st.integers(0, n_sources - 1))]
        else:
            owners = data.draw(st.sets(st.integers(0, n_sources - 1), min_size=1))
        for owner in owners:
            holdings[owner].append(copy.copy(row))
    p = pipeline(*[InMemoryFetcher(h, name=f"s{i}") for i, h in enumerate(holdings)],
                 mode=FallbackMode.PARALLEL)
    got = walk(p, limit=limit, use_cursor=use_cursor, ordering=ordering)
    assert [r.pk for r in got] == expected(rows, ordering)
    assert all(r.tenant == "t1" for r in got)


@PROPERTY
@given(values=st.lists(row_values, max_size=30), data=st.data(), limit=st.integers(1, 7),
       mode=st.sampled_from([FallbackMode.SEQUENTIAL, FallbackMode.FIRST_SUCCESS]))
def test_tiered_walk_returns_every_row_once_in_order(values, data, limit, mode):
    """Tiered sources (what SEQUENTIAL and FIRST_SUCCESS are for): the rows a later source
    adds all come after an earlier source's rows, e.g. a primary with the newest rows and an
    archive with all of them (overlapping) or only the older ones (disjoint)."""
    ordering = ("-created_at", "-id")
    rows = build_rows(values)
    order = Ordering.for_model(Item, ordering)
    rows.sort(key=order.key)
    n_sources = data.draw(st.integers(1, 3), label="sources")
    inner_cuts = data.draw(st.lists(st.integers(0, len(rows)), min_size=n_sources - 1,
                                    max_size=n_sources - 1), label="cuts")
    cuts = [*sorted(inner_cuts), len(rows)]
    fetchers, start = [], 0
    for i, cut in enumerate(cuts):
        overlapping = data.draw(st.booleans(), label=f"overlap{i}")
        held = rows[0 if overlapping else start : cut]
        fetchers.append(InMemoryFetcher([copy.copy(r) for r in held], name=f"s{i}"))
        start = cut
    p = pipeline(*fetchers, mode=mode)
    # FIRST_SUCCESS serves each page from one source, so offsets are that source's own:
    # tiered sources are walked with cursors there.
    use_cursor = True if mode is FallbackMode.FIRST_SUCCESS else data.draw(st.booleans())
    got = walk(p, limit=limit, use_cursor=use_cursor)
    assert [r.pk for r in got] == expected(rows, ordering)


@PROPERTY
@given(values=st.lists(row_values, max_size=25), data=st.data(), limit=st.integers(1, 6),
       use_cursor=st.booleans(), mode=st.sampled_from(list(FallbackMode)))
def test_full_copies_with_outages_still_walk_exactly(values, data, limit, use_cursor, mode):
    """Replicas of the same data, some of them down: every mode pages exactly."""
    rows = build_rows(values)
    n_sources = data.draw(st.integers(2, 3))
    up = data.draw(st.lists(st.booleans(), min_size=n_sources, max_size=n_sources)
                   .filter(any), label="up")
    fetchers = [InMemoryFetcher([copy.copy(r) for r in rows], name=f"s{i}", available=ok)
                for i, ok in enumerate(up)]
    got = walk(pipeline(*fetchers, mode=mode), limit=limit, use_cursor=use_cursor)
    assert [r.pk for r in got] == expected(rows, ("-created_at", "-id"))


def test_a_retrieve_stops_at_the_first_source_that_has_the_row():
    a = InMemoryFetcher([item(1), item(2)], name="a")
    b = InMemoryFetcher([item(1, name="archive"), item(3)], name="b")
    p = pipeline(a, b)
    found = p.execute(tenant="t1", pk=1)
    assert [r.pk for r in found.items] == [1] and found.source == "a" and not found.has_more
    assert b.calls == []
    assert [r.pk for r in p.execute(tenant="t1", pk=3).items] == [3]
    assert p.execute(tenant="t1", pk=4).items == []


# -- a complete source ends the chain -----------------------------------------------------------
# A source whose answer is ``complete`` (a search index of the whole model) ends the chain: the
# database sources behind it only serve when it cannot answer, so the engine's matching rules
# and the database's never mix in one page.

def complete_row(pk: int, minutes: int) -> Item:
    return Item(id=pk, tenant="t1", name=f"n{pk}", status="queued", amount=0,
                created_at=BASE + dt.timedelta(minutes=minutes), day=BASE.date())


class CompleteFetcher(InMemoryFetcher):
    """Like a search index: whatever it answers is the whole answer."""

    def fetch(self, request: FetchRequest) -> FetchResult:
        result = super().fetch(request)
        result.complete = True
        return result


def complete_pipeline(*fetchers, mode: FallbackMode) -> Pipeline:
    return Pipeline("complete-test", model=Item, fetchers=list(fetchers), fallback=mode,
                    ordering=("-created_at", "-id"), tenant_field="tenant", timeout=None,
                    register=False)


# What the engine matches; the database also matches row 3 (substring).
ENGINE_ROWS = [complete_row(1, 1), complete_row(2, 2)]
DB_ROWS = [complete_row(1, 1), complete_row(2, 2), complete_row(3, 3)]


@pytest.mark.parametrize("mode", list(FallbackMode))
def test_a_short_complete_page_is_not_topped_up(mode: FallbackMode) -> None:
    engine = CompleteFetcher(ENGINE_ROWS, name="search")
    database = InMemoryFetcher(DB_ROWS, name="db")
    result = complete_pipeline(engine, database, mode=mode).execute(
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
    result = complete_pipeline(engine, database, mode=mode).execute(PipelineRequest(tenant="t1"))
    assert result.items == []
    assert result.sources == ("search",)
    assert database.calls == []


@pytest.mark.parametrize("mode", list(FallbackMode))
def test_the_database_serves_when_the_engine_is_down(mode: FallbackMode) -> None:
    engine = CompleteFetcher(ENGINE_ROWS, name="search", available=False)
    database = InMemoryFetcher(DB_ROWS, name="db")
    result = complete_pipeline(engine, database, mode=mode).execute(
        PipelineRequest(tenant="t1", limit=10))
    assert [r.pk for r in result.items] == [3, 2, 1]
    assert result.sources == ("db",)
    engine.available = database.available = False
    with pytest.raises(SourcesUnavailable):
        complete_pipeline(engine, database, mode=mode).execute(PipelineRequest(tenant="t1"))


def test_sources_before_a_complete_one_are_still_merged() -> None:
    # A cache (or a primary) first, the complete index second: rows merge as usual.
    first = InMemoryFetcher([complete_row(5, 5)], name="first")
    engine = CompleteFetcher(ENGINE_ROWS, name="search")
    after = InMemoryFetcher(DB_ROWS, name="db")
    result = complete_pipeline(first, engine, after, mode=FallbackMode.SEQUENTIAL).execute(
        PipelineRequest(tenant="t1", limit=10))
    assert [r.pk for r in result.items] == [5, 2, 1]
    assert set(result.sources) == {"first", "search"}


@given(rows=st.lists(st.integers(0, 50), max_size=12, unique=True), limit=st.integers(1, 4),
       mode=st.sampled_from(list(FallbackMode)), cursor=st.booleans())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_walking_a_complete_source_returns_its_rows_once(rows, limit, mode, cursor) -> None:
    engine_rows = [complete_row(pk + 1, minutes) for pk, minutes in enumerate(rows)]
    p = complete_pipeline(CompleteFetcher(engine_rows, name="search"),
                 InMemoryFetcher([*engine_rows, complete_row(999, 1000)], name="db"), mode=mode)
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
