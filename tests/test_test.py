"""``datapipe_django.test``: the test doubles users' own tests use. ``InMemoryFetcher`` keeps the
fetcher contract (tests/test_fetcher_contract.py runs it with the real fetchers); here what it
adds: switching it off, the requests it records, facets, and the in-memory twin of ``q``."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest

from datapipe_django import Pipeline, PipelineRequest, registry
from datapipe_django.errors import SourceUnavailable
from datapipe_django.fetchers import FetchRequest
from datapipe_django.paging import Ordering
from datapipe_django.specs import MatchAll
from datapipe_django.test import InMemoryFetcher, count_facets, matches_search, unregister_pipeline
from tests.testapp.models import Item

BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def item(pk: int, **kwargs: Any) -> Item:
    values: dict[str, Any] = dict(tenant="t1", name=f"n{pk}", status="queued", amount=pk,
                                  created_at=BASE + dt.timedelta(minutes=pk), day=BASE.date())
    return Item(id=pk, **{**values, **kwargs})


def ask(**kwargs: Any) -> FetchRequest:
    return FetchRequest(request=PipelineRequest(), model=Item, spec=MatchAll(),
                        ordering=Ordering.for_model(Item, ["id"]), size=10, **kwargs)


@pytest.mark.parametrize(("search", "found"), [
    ("red", True), ("RED apple", True), ("apple,red", True), ("Äpfel", True),
    ("red pear", False), ("", True), ("   ", True),
])
def test_matches_search_wants_every_word_in_some_field(search: str, found: bool) -> None:
    row = item(1, name="Red APPLE", status="äpfel")
    assert matches_search(row, search, ("name", "status")) is found


def test_switched_off_it_is_a_source_that_is_down() -> None:
    fetcher = InMemoryFetcher([item(1)], name="mem", available=False)
    with pytest.raises(SourceUnavailable) as info:
        fetcher.fetch(ask())
    assert (info.value.source, info.value.reason) == ("mem", "switched off")
    fetcher.available = True
    assert [r.pk for r in fetcher.fetch(ask()).items] == [1]


def test_it_records_every_request() -> None:
    fetcher = InMemoryFetcher([item(1), item(2)])
    pipeline = Pipeline("memory-calls", model=Item, fetchers=[fetcher], register=False)
    pipeline.execute(PipelineRequest(limit=1))
    assert len(fetcher.calls) == 1
    assert fetcher.calls[0].size == 2  # the page and one row more: is there a next page?


def test_facets_count_every_matching_row_most_first_then_by_value() -> None:
    rows = [item(1, status="b"), item(2, status="a"), item(3, status="b"),
            item(4, score=None), item(5, status="c")]
    request = ask(facets=("status", "score"), facet_size=2)
    counts = count_facets(rows, request)
    assert counts["status"] == [("b", 2), ("a", 1)]
    assert counts["score"] == []  # rows without a value are not counted
    result = InMemoryFetcher(rows).fetch(replace(request, size=1))
    assert result.meta["facets"]["status"] == [("b", 2), ("a", 1)]  # not only the page
    assert result.complete


def test_unregister_pipeline_lets_a_test_declare_a_name_again() -> None:
    Pipeline("memory-again", model=Item, fetchers=[InMemoryFetcher()])
    unregister_pipeline("memory-again")
    again = Pipeline("memory-again", model=Item, fetchers=[InMemoryFetcher()])
    assert registry.get_pipeline("memory-again") is again
    unregister_pipeline("memory-again")
