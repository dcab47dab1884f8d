"""``datapipe_django.search.body``: orderings, cursors and whole requests as search bodies,
without an engine."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from datapipe_django.paging import Ordering
from datapipe_django.search.body import multi_match, search_after, search_body, sort_clause
from datapipe_django.specs import (
    Eq,
    MatchAll,
)
from datapipe_django.specs.search import FieldMap, compile_spec
from tests.test_specs_search import UTC, fields
from tests.testapp.models import Item


class TestSortAndCursor:
    def test_sort_puts_missing_values_last_and_the_pk_last(self) -> None:
        ordering = Ordering.for_model(Item, ("-score", "name"))
        assert sort_clause(ordering, fields()) == [
            {"score": {"order": "desc", "missing": "_last"}},
            {"name.raw": {"order": "asc", "missing": "_last"}},
            {"id": {"order": "asc", "missing": "_last"}},
        ]

    def test_search_after_speaks_the_engines_sort_values(self) -> None:
        moment = dt.datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
        ordering = Ordering.for_model(Item, ("-created_at", "day", "active", "-score", "name"))
        values = (moment, dt.date(2024, 1, 2), True, None, None, 5)
        assert search_after(ordering, values, fields()) == [
            1_704_067_200_000_001_000,          # date_nanos: nanoseconds
            1_704_153_600_000,                  # date: milliseconds
            1,                                  # boolean
            -(2**31),                           # a missing integer, descending
            None,                               # a missing keyword
            5,
        ]
        ascending = Ordering.for_model(Item, ("score", "-day", "created_at"))
        assert search_after(ascending, (None, None, None, 1), fields()) == [
            2**31 - 1, -(2**63), 2**63 - 1, 1]
        descending_nanos = Ordering.for_model(Item, ("-created_at",))
        assert search_after(descending_nanos, (None, 1), fields())[0] == 0
        before_epoch = dt.datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
        millis = FieldMap({"properties": {"created_at": {"type": "date"},
                                          "id": {"type": "long"}}}, model=Item)
        assert search_after(Ordering.for_model(Item, ("created_at",)), (before_epoch, 1),
                            millis) == [-1, 1]  # floor, as the engine truncates

    def test_float_fields(self) -> None:
        mapping = {"properties": {"amount": {"type": "double"}, "id": {"type": "long"}}}
        ordering = Ordering.for_model(Item, ("amount",))
        assert search_after(ordering, (None, 1), FieldMap(mapping, model=Item)) == [
            "Infinity", 1]
        assert compile_spec(Eq("amount", Decimal("2.5")), fields=FieldMap(mapping)) == {
            "term": {"amount": 2.5}}


class TestBody:
    def test_whole_request(self) -> None:
        ordering = Ordering.for_model(Item, ("-created_at",))
        body = search_body(spec=Eq("tenant", "t1") & Eq("status", "queued"), size=11,
                           ordering=ordering, fields=fields(), offset=20, search="big red",
                           search_fields=("name", "owner__name"), timeout=0.25)
        assert body == {
            "query": {"bool": {
                "filter": [{"term": {"tenant": "t1"}}, {"term": {"status": "queued"}}],
                "must": [multi_match("big red", ["name", "owner.name"])],
            }},
            "size": 11,
            "from": 20,
            "sort": [{"created_at": {"order": "desc", "missing": "_last"}},
                     {"id": {"order": "desc", "missing": "_last"}}],
            "track_total_hits": False,
            "_source": True,
            "timeout": "250ms",
        }
        assert body["query"]["bool"]["must"][0]["multi_match"]["operator"] == "and"

    def test_cursor_pages_and_retrieves(self) -> None:
        ordering = Ordering.for_model(Item, ("amount",))
        body = search_body(spec=MatchAll(), size=3, ordering=ordering, fields=fields(),
                           after=(5, 9), source=False, track_total_hits=True)
        assert body["query"] == {"match_all": {}}
        assert body["search_after"] == [5, 9]
        assert "from" not in body
        assert body["_source"] is False
        assert body["track_total_hits"] is True
        with pytest.raises(ValueError, match="offset"):
            search_body(spec=None, size=3, ordering=ordering, after=(5, 9), offset=3)
        retrieve = search_body(spec=Eq("tenant", "t"), size=1, pk=7, fields=fields(),
                               search_query={"match": {"name": "x"}}, search="x")
        assert retrieve["query"]["bool"] == {"filter": [{"term": {"tenant": "t"}},
                                                        {"ids": {"values": ["7"]}}],
                                             "must": [{"match": {"name": "x"}}]}
