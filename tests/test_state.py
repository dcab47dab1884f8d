"""``datapipe_django.state``: the ``State`` one execution carries and the ``PipelineResult`` built
from it (what ``Pipeline.execute`` returns)."""

from __future__ import annotations

import datetime as dt
import time

from datapipe_django import FallbackMode, Pipeline, PipelineRequest
from datapipe_django.chain import Attempt
from datapipe_django.state import PipelineResult, State
from datapipe_django.test import InMemoryFetcher
from tests.testapp.models import Item

BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def item(pk: int) -> Item:
    return Item(id=pk, tenant="t1", name=f"n{pk}", status="queued", amount=pk,
                created_at=BASE + dt.timedelta(minutes=pk), day=BASE.date())


def test_count_is_the_page_and_source_names_every_source() -> None:
    result = PipelineResult(items=[item(1), item(2)], sources=("appdb", "archive"))
    assert result.count == 2
    assert result.source == "appdb,archive"
    assert result.item.pk == 1
    assert PipelineResult(items=[]).item is None


def test_unavailable_names_each_source_that_could_not_answer_once() -> None:
    result = PipelineResult(items=[], attempts=[
        Attempt("replica", "unavailable", "down"), Attempt("appdb", "ok"),
        Attempt("archive", "timeout", "slow"), Attempt("replica", "unavailable", "again"),
        Attempt("search", "declined", "no q")])
    assert result.unavailable == ("replica", "archive")


def test_the_remaining_budget_counts_down_and_never_below_zero() -> None:
    pipeline = Pipeline("state-budget", model=Item, fetchers=[InMemoryFetcher()],
                        register=False)
    request = PipelineRequest()
    assert State(pipeline=pipeline, request=request, deadline=None).remaining is None
    state = State(pipeline=pipeline, request=request, deadline=time.monotonic() + 2)
    assert 1 < state.remaining <= 2
    assert State(pipeline=pipeline, request=request,
                 deadline=time.monotonic() - 1).remaining == 0.0


def test_an_execution_is_its_result() -> None:
    rows = [item(pk) for pk in range(1, 6)]
    pipeline = Pipeline("state-result", model=Item, tenant_field="tenant",
                        ordering=("-created_at",), fallback=FallbackMode.SEQUENTIAL,
                        fetchers=[InMemoryFetcher(rows, name="down", available=False),
                                  InMemoryFetcher(rows, name="memory")], register=False)
    result = pipeline.execute(PipelineRequest(tenant="t1", limit=2, total=True))
    assert [r.pk for r in result.items] == [5, 4]
    assert result.has_more and result.next_cursor
    assert result.sources == ("memory",) and result.unavailable == ("down",)
    # Two sources that may hold the same rows: the total is not exact, and says why.
    assert (result.total, result.total_exact) == (None, False) and result.total_reason
    assert result.highlights is None and result.facets is None
    alone = Pipeline("state-total", model=Item, tenant_field="tenant", register=False,
                     fetchers=[InMemoryFetcher(rows, name="memory")])
    whole = alone.execute(PipelineRequest(tenant="t1", limit=2, total=True))
    assert (whole.total, whole.total_exact, whole.total_reason) == (5, True, "")
