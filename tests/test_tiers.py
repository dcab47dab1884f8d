"""Tiered sources declared with ``holds=``: exact pages by construction, no read that adds
nothing.

The scenario: a hot tier that holds every row newer than a boundary (and, while rows migrate,
some older ones it has not deleted yet), an archive that holds every row (undeclared) or every
row older than a later boundary (and some newer ones it already copied), optionally a mirror
of the hot tier. Hypothesis draws the rows, the boundaries, the filters, the ordering, the
limit, offsets or cursors and the mode; walking every page must return exactly the ground
truth, once each, in order, and a page (with the row after it) inside the hot tier must run
no query on the archive. The same scenarios run on plain lists, on SQLite + MariaDB and on
PostgreSQL + MariaDB.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datapipe_django import FallbackMode, Pipeline, PipelineRequest
from datapipe_django.chain import FetcherChain
from datapipe_django.fetchers import ORMFetcher
from datapipe_django.paging import Ordering
from datapipe_django.specs import Range, compile_filterset
from datapipe_django.test import InMemoryFetcher
from datapipe_django.tiers import Relation, relation
from tests.conftest import require_alias
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Item

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ORDERINGS = [("-created_at", "-id"), ("created_at",), ("-amount", "-created_at"),
             ("score",), ("-score", "name")]


def at(minutes: int, pk: int = 0) -> dt.datetime:
    return BASE + dt.timedelta(minutes=minutes, microseconds=pk % 3)


def make(pk: int, minutes: int, score: int | None, name: str, amount: int, tenant: str,
         status: str) -> Item:
    return Item(id=pk, tenant=tenant, name=name, status=status, amount=amount,
                created_at=at(minutes, pk), day=BASE.date(), score=score)


row_values = st.tuples(
    st.integers(0, 10),                          # minutes: the tier boundaries cut these
    st.one_of(st.none(), st.integers(0, 3)),     # score: NULLs and ties
    st.sampled_from(["a", "b"]),                 # name
    st.integers(0, 3),                           # amount
    st.sampled_from(["t1", "t1", "t2"]),         # tenant
    st.sampled_from(["queued", "processed"]),    # status
)

filters_strategy = st.fixed_dictionaries({}, optional={
    "status": st.sampled_from(["queued", "processed"]),
    "amount__gte": st.integers(0, 3).map(str),
    "created_at_after": st.integers(0, 11).map(lambda m: at(m).isoformat()),
    "created_at_before": st.integers(0, 11).map(lambda m: at(m).isoformat()),
})


class Scenario:
    """Rows, where they are, and what each tier declares."""

    def __init__(self, data: Any, values: list[tuple[Any, ...]]) -> None:
        self.rows = [make(i + 1, *v) for i, v in enumerate(values)]
        self.hot_cut = data.draw(st.integers(0, 11), label="hot boundary (minutes)")
        self.hot_holds = Range("created_at", gte=at(self.hot_cut))
        self.archive_declared = data.draw(st.booleans(), label="archive declares holds")
        self.archive_cut = data.draw(st.integers(self.hot_cut, 11), label="archive boundary") \
            if self.archive_declared else None
        hot, archive = [], []
        for row in self.rows:
            recent = row.created_at >= at(self.hot_cut)
            old_for_archive = self.archive_cut is None or row.created_at < at(self.archive_cut)
            # Migrating rows: an old row the hot tier has not deleted yet, a recent row the
            # archive already copied. A row older than the boundary may be gone from it too.
            if recent or data.draw(st.booleans(), label=f"hot keeps {row.pk}"):
                hot.append(row)
            if old_for_archive or data.draw(st.booleans(), label=f"archive has {row.pk}"):
                archive.append(row)
        self.hot, self.archive = hot, archive
        self.callable_holds = data.draw(st.booleans(), label="holds as a callable")

    @property
    def hot_declaration(self) -> Any:
        holds = self.hot_holds
        return (lambda: holds) if self.callable_holds else holds

    @property
    def archive_declaration(self) -> Any:
        return None if self.archive_cut is None else Range("created_at", lt=at(self.archive_cut))

    def in_hot(self, row: Item) -> bool:
        return row.created_at >= at(self.hot_cut)


def build(fetchers: list[Any], mode: FallbackMode) -> Pipeline:
    return Pipeline("tiers-test", model=Item, fetchers=fetchers, fallback=mode,
                    filterset_class=ItemFilterSet, ordering=("-created_at", "-id"),
                    ordering_fields=("created_at", "score", "name", "amount"),
                    tenant_field="tenant", timeout=None, register=False)


def truth(rows: list[Item], filters: dict[str, str], ordering: tuple[str, ...]) -> list[Item]:
    spec = compile_filterset(ItemFilterSet, filters)
    order = Ordering.for_model(Item, ordering)
    return sorted((r for r in rows if r.tenant == "t1" and spec.matches(r)), key=order.key)


def walk(p: Pipeline, *, filters: dict[str, str], ordering: tuple[str, ...], limit: int,
         use_cursor: bool, on_page: Any = None) -> list[Item]:
    got: list[Item] = []
    cursor, offset = None, 0
    for _ in range(200):
        position = len(got)
        before = on_page() if on_page else None
        result = p.execute(PipelineRequest(
            filters=filters, tenant="t1", limit=limit, ordering=ordering,
            cursor=cursor if use_cursor else None, offset=None if use_cursor else offset))
        assert not result.partial
        got.extend(result.items)
        if on_page:
            on_page(position, before)
        if not result.has_more:
            return got
        cursor, offset = result.next_cursor, offset + limit
    raise AssertionError("paging did not end")


PROPERTY = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


# -- plain lists ---------------------------------------------------------------------------------

@PROPERTY
@given(values=st.lists(row_values, max_size=25), data=st.data(), filters=filters_strategy,
       ordering=st.sampled_from(ORDERINGS), limit=st.integers(1, 6), use_cursor=st.booleans(),
       mode=st.sampled_from(list(FallbackMode)))
def test_tiers_on_lists_walk_exactly_and_a_hot_page_never_reads_the_archive(
        values, data, filters, ordering, limit, use_cursor, mode):
    s = Scenario(data, values)
    hot = InMemoryFetcher([copy.copy(r) for r in s.hot], name="hot",
                          holds=s.hot_declaration)
    archive = InMemoryFetcher([copy.copy(r) for r in s.archive], name="archive",
                              holds=s.archive_declaration)
    mirror = InMemoryFetcher([copy.copy(r) for r in s.hot], name="hot-replica",
                             mirror_of="hot")
    with_mirror = data.draw(st.booleans(), label="mirror")
    # The hot tier may be down when something else holds its rows: its mirror, or an archive
    # of every row.
    hot.available = not data.draw(st.booleans(), label="hot down") \
        if with_mirror or not s.archive_declared else True
    fetchers = [hot, mirror, archive] if with_mirror else [hot, archive]
    p = build(fetchers, mode)
    want = truth(s.rows, filters, ordering)

    def on_page(position: int | None = None, before: Any = None) -> Any:
        if position is None:
            return len(archive.calls)
        window = want[position : position + limit + 1]
        if (hot.available and ordering[0] == "-created_at" and len(window) == limit + 1
                and all(s.in_hot(r) for r in window)):
            assert len(archive.calls) == before, "a page inside the hot tier read the archive"
        return None

    got = walk(p, filters=filters, ordering=ordering, limit=limit, use_cursor=use_cursor,
               on_page=on_page)
    assert [r.pk for r in got] == [r.pk for r in want]
    if hot.available:
        assert mirror.calls == [], "a mirror was read although its primary answered"


def test_the_readme_case_a_client_ordering_the_hot_tier_is_not_aligned_with():
    """Issue 12's report: 30 days in the primary, everything in the archive, SEQUENTIAL,
    ``ordering=-amount``, no can_handle: every row, in order (it was 53 of 150)."""
    rows = [make(i + 1, i % 11, None, "a", (i * 7) % 50, "t1", "queued") for i in range(150)]
    hot = InMemoryFetcher([r for r in rows if r.created_at >= at(6)], name="appdb",
                          holds=Range("created_at", gte=at(6)))
    archive = InMemoryFetcher(rows, name="archive")
    p = build([hot, archive], FallbackMode.SEQUENTIAL)
    got = walk(p, filters={}, ordering=("-amount",), limit=10, use_cursor=False)
    assert [r.pk for r in got] == [r.pk for r in truth(rows, {}, ("-amount",))]
    assert hot.calls == []  # skipped: -amount is not aligned with its holds
    archive.calls.clear()
    got = walk(p, filters={}, ordering=("-created_at",), limit=10, use_cursor=True)
    assert [r.pk for r in got] == [r.pk for r in truth(rows, {}, ("-created_at",))]
    # The archive is never asked for what the primary holds: its query carries ~holds, or
    # the cursor is already past the boundary.
    assert archive.calls
    assert all("Not(Range(field='created_at'" in repr(call.spec)
               or (call.after is not None and call.after[0] < at(6)) for call in archive.calls)


def test_a_deep_offset_page_pushes_the_offset_down_to_the_next_tier():
    rows = [make(i + 1, i % 11, None, "a", 0, "t1", "queued") for i in range(110)]
    hot = InMemoryFetcher([r for r in rows if r.created_at >= at(6)], name="appdb",
                          holds=Range("created_at", gte=at(6)))
    archive = InMemoryFetcher(rows, name="archive")
    p = build([hot, archive], FallbackMode.SEQUENTIAL)
    in_hot = len(hot.rows)
    result = p.execute(PipelineRequest(tenant="t1", limit=5, offset=in_hot + 20))
    want = truth(rows, {}, ("-created_at",))[in_hot + 20 : in_hot + 25]
    assert [r.pk for r in result.items] == [r.pk for r in want]
    page, count = hot.calls
    assert (page.offset, page.size) == (in_hot + 20, 6)
    assert count.size == 6  # the count (offset and size ignored)
    (beyond,) = archive.calls
    assert (beyond.offset, beyond.size) == (20, 6)


def test_a_mirror_is_read_only_in_its_primary_place():
    rows = [make(i + 1, i, None, "a", 0, "t1", "queued") for i in range(5)]
    primary = InMemoryFetcher([copy.copy(r) for r in rows], name="appdb")
    replica = InMemoryFetcher([copy.copy(r) for r in rows], name="replica", mirror_of="appdb")
    archive = InMemoryFetcher([copy.copy(r) for r in rows], name="archive")
    for mode in FallbackMode:
        primary.calls.clear(), replica.calls.clear()
        primary.available = True
        p = build([primary, replica, archive], mode)
        result = p.execute(PipelineRequest(tenant="t1", limit=10))
        assert len(result.items) == 5 and replica.calls == []
        assert any(a.source == "replica" and a.outcome == "not_needed"
                   and a.reason == "mirror of appdb, which answered" for a in result.attempts)
        primary.available = False
        result = p.execute(PipelineRequest(tenant="t1", limit=10))
        assert len(result.items) == 5 and "replica" in result.sources and not result.partial


def test_relation_of_holds_to_a_request():
    order = Ordering.for_model(Item, ("-created_at",))
    hot = Range("created_at", gte=at(5))
    assert relation(hot, None, order, None) is Relation.PREFIX
    assert relation(hot, Range("created_at", gte=at(6)), order, None) is Relation.ALL
    assert relation(hot, Range("created_at", lt=at(5)), order, None) is Relation.NONE
    assert relation(hot, None, order, (at(4), 1)) is Relation.NONE  # a cursor past it
    assert relation(hot, None, Ordering.for_model(Item, ("created_at",)), None) \
        is Relation.UNALIGNED
    assert relation(hot, None, Ordering.for_model(Item, ("-amount",)), None) \
        is Relation.UNALIGNED
    assert relation(hot, None, Ordering.for_model(Item, ("created_at",)), (at(6), 1)) \
        is Relation.ALL  # ascending, after its boundary: everything left is in it


def test_plan_says_what_each_source_does():
    hot = InMemoryFetcher(name="appdb", holds=Range("created_at", gte=at(5)))
    replica = InMemoryFetcher(name="replica", mirror_of="appdb")
    archive = InMemoryFetcher(name="archive")
    chain = FetcherChain([hot, replica, archive])
    p = build([hot, replica, archive], FallbackMode.SEQUENTIAL)

    def plan(ordering):
        from datapipe_django.stages import fetch_request, validate
        from datapipe_django.state import State

        state = State(pipeline=p, request=PipelineRequest(tenant="t1", ordering=ordering))
        validate(state)
        return {s.source: s for s in chain.plan(fetch_request(state)).steps}

    steps = plan(("-created_at",))
    assert steps["appdb"].action == "prefix"
    assert steps["appdb"].verdict.startswith("serves the prefix created_at ≥ 2026-01-01 00:05")
    assert steps["replica"].verdict.startswith("not read: mirror of appdb")
    assert steps["archive"].action == "serves"
    steps = plan(("-amount",))
    assert steps["appdb"].verdict == "skipped: -amount is not aligned with its holds"
    assert steps["archive"].action == "serves"


# -- real databases ------------------------------------------------------------------------------

TIER_DATABASES = ["default", "primary", "archive"]


def _reset(alias: str, rows: list[Item]) -> None:
    Item.objects.using(alias).all().delete()
    Item.objects.using(alias).bulk_create([copy.copy(r) for r in rows])


@pytest.mark.django_db(databases=TIER_DATABASES)
@pytest.mark.parametrize("hot_alias", ["default", "primary"])
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(values=st.lists(row_values, max_size=20), data=st.data(), filters=filters_strategy,
       ordering=st.sampled_from(ORDERINGS), limit=st.integers(1, 5), use_cursor=st.booleans(),
       mode=st.sampled_from(list(FallbackMode)))
def test_tiers_on_databases_walk_exactly_and_a_hot_page_never_queries_the_archive(
        hot_alias, values, data, filters, ordering, limit, use_cursor, mode):
    require_alias(hot_alias)
    require_alias("archive")
    s = Scenario(data, values)
    _reset(hot_alias, s.hot)
    _reset("archive", s.archive)
    p = build([ORMFetcher(hot_alias, name="hot", holds=s.hot_declaration),
               ORMFetcher("archive", holds=s.archive_declaration)], mode)
    want = truth(s.rows, filters, ordering)
    capture = CaptureQueriesContext(connections["archive"])

    def on_page(position: int | None = None, before: Any = None) -> Any:
        if position is None:
            capture.__enter__()
            return None
        capture.__exit__(None, None, None)
        window = want[position : position + limit + 1]
        if (ordering[0] == "-created_at" and len(window) == limit + 1
                and all(s.in_hot(r) for r in window)):
            assert len(capture.captured_queries) == 0, capture.captured_queries
        return None

    got = walk(p, filters=filters, ordering=ordering, limit=limit, use_cursor=use_cursor,
               on_page=on_page)
    assert [r.pk for r in got] == [r.pk for r in want]


@settings(PROPERTY, max_examples=200)
@given(values=st.lists(row_values, min_size=1, max_size=20), data=st.data(),
       filters=filters_strategy, ordering=st.sampled_from(ORDERINGS), limit=st.integers(1, 5),
       use_cursor=st.booleans(), mode=st.sampled_from(list(FallbackMode)),
       down=st.sampled_from(["hot", "archive"]))
def test_with_outages_a_page_is_exact_or_says_partial(values, data, filters, ordering, limit,
                                                      use_cursor, mode, down):
    """One tier down: a page never holds a wrong or misordered row, and a walk that misses
    rows had a page flagged partial (or was a 503)."""
    from datapipe_django import SourcesUnavailable

    s = Scenario(data, values)
    hot = InMemoryFetcher([copy.copy(r) for r in s.hot], name="hot", holds=s.hot_declaration,
                          available=down != "hot")
    archive = InMemoryFetcher([copy.copy(r) for r in s.archive], name="archive",
                              holds=s.archive_declaration, available=down != "archive")
    p = build([hot, archive], mode)
    want = [r.pk for r in truth(s.rows, filters, ordering)]
    got: list[int] = []
    flagged = False
    cursor, offset = None, 0
    try:
        for _ in range(100):
            result = p.execute(PipelineRequest(
                filters=filters, tenant="t1", limit=limit, ordering=ordering,
                cursor=cursor if use_cursor else None, offset=None if use_cursor else offset))
            flagged = flagged or result.partial
            got.extend(r.pk for r in result.items)
            if not result.has_more:
                break
            cursor, offset = result.next_cursor, offset + limit
    except SourcesUnavailable:
        return  # a 503: nothing wrong was served
    positions = [want.index(pk) for pk in got if pk in want]
    assert len(positions) == len(got), "a row that does not match was served"
    if not use_cursor and flagged:
        return  # offsets of a partial walk shift: rows may repeat or be skipped, flagged
    assert positions == sorted(set(positions)), "rows out of order or twice"
    if got != want:
        assert flagged, "rows are missing and no page said partial"


def test_can_handle_composes_with_holds():
    rows = [make(i + 1, i % 11, None, "a", 0, "t1", "queued") for i in range(30)]
    hot = InMemoryFetcher([r for r in rows if r.created_at >= at(6)], name="appdb",
                          holds=Range("created_at", gte=at(6)),
                          can_handle=lambda request: request.auth_type != "batch")
    archive = InMemoryFetcher(rows, name="archive")
    p = build([hot, archive], FallbackMode.SEQUENTIAL)
    want = [r.pk for r in truth(rows, {}, ("-created_at",))]
    served = p.execute(PipelineRequest(tenant="t1", limit=5))
    assert [r.pk for r in served.items] == want[:5] and served.source == "appdb"
    declined = p.execute(PipelineRequest(tenant="t1", limit=5, auth_type="batch"))
    assert [r.pk for r in declined.items] == want[:5] and declined.source == "archive"
    assert any(a.source == "appdb" and a.outcome == "declined" for a in declined.attempts)


def test_a_cache_holds_what_its_fetcher_holds_unless_told():
    from datapipe_django.fetchers import CachedFetcher

    hot = Range("created_at", gte=at(5))
    inner = ORMFetcher("default", name="appdb", holds=hot)
    assert CachedFetcher(inner, ttl=5).get_holds() == hot
    assert CachedFetcher(ORMFetcher("default"), ttl=5, holds=lambda: hot).get_holds() == hot
    assert CachedFetcher(ORMFetcher("default"), ttl=5).get_holds() is None


@PROPERTY
@given(values=st.lists(row_values, max_size=25), data=st.data(), filters=filters_strategy,
       ordering=st.sampled_from(ORDERINGS), limit=st.integers(1, 6),
       offset=st.integers(0, 8), mode=st.sampled_from(list(FallbackMode)))
def test_the_page_reads_only_what_its_plan_reads(values, data, filters, ordering, limit,
                                                 offset, mode):
    """One set of tier rules: with every source up, a page reads no source its plan does not
    read, and reads none after a source the plan says serves the rest."""
    from datapipe_django.stages import fetch_request, validate
    from datapipe_django.state import State

    s = Scenario(data, values)
    hot = InMemoryFetcher([copy.copy(r) for r in s.hot], name="hot", holds=s.hot_declaration)
    mirror = InMemoryFetcher([copy.copy(r) for r in s.hot], name="hot-replica",
                             mirror_of="hot")
    archive = InMemoryFetcher([copy.copy(r) for r in s.archive], name="archive",
                              holds=s.archive_declaration)
    p = build([hot, mirror, archive], mode)
    request = PipelineRequest(filters=filters, tenant="t1", limit=limit, ordering=ordering,
                              offset=offset)
    state = State(pipeline=p, request=request)
    validate(state)
    plan = FetcherChain(p.fetchers, mode).plan(fetch_request(state))
    reading = [step.source for step in plan.reading]
    result = p.execute(request)
    read = [f.name for f in (hot, mirror, archive) if f.calls]
    assert set(read) <= set(reading), (plan.steps, read)
    actions = {step.source: step.action for step in plan.steps}
    serving = next((i for i, name in enumerate(reading) if actions[name] == "serves"), None)
    if serving is not None:
        assert not set(read) & set(reading[serving + 1:])
    want = truth(s.rows, filters, ordering)[offset : offset + limit]
    assert [r.pk for r in result.items] == [r.pk for r in want]
