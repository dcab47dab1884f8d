"""``datapipe_django.specs.search``: specs as Elasticsearch/OpenSearch queries through the
Document's field map, without an engine (the agreement with the database on a real engine is
in tests/test_elasticsearch_specs.py)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from django.test import override_settings

from datapipe_django.specs import (
    And,
    Contains,
    EndsWith,
    Eq,
    IEq,
    In,
    IsNull,
    MatchAll,
    MatchNone,
    Not,
    Or,
    Range,
    Spec,
    StartsWith,
    Uncompilable,
)
from datapipe_django.specs.search import FieldMap, NotSearchable, compile_spec
from tests.testapp.models import Category, Item

UTC = dt.UTC
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))

#: What ItemDocument's mapping looks like (tests/search_documents.py), as a plain dict.
MAPPING = {
    "properties": {
        "id": {"type": "long"},
        "tenant": {"type": "keyword"},
        "name": {"type": "text", "fields": {"raw": {"type": "keyword"}}},
        "status": {"type": "keyword"},
        "amount": {"type": "integer"},
        "active": {"type": "boolean"},
        "created_at": {"type": "date_nanos"},
        "day": {"type": "date"},
        "score": {"type": "integer"},
        "category": {"type": "long"},
        "owner": {"type": "object", "properties": {"id": {"type": "long"},
                                                   "name": {"type": "keyword"}}},
    }
}


def fields() -> FieldMap:
    return FieldMap(MAPPING, model=Item)


def q(spec: Spec) -> dict:
    return compile_spec(spec, fields=fields())


class TestLeaves:
    def test_default_names_and_values_without_a_mapping(self) -> None:
        assert Eq("owner__name", "x").to_search() == {"term": {"owner.name": "x"}}
        assert Eq("day", dt.date(2024, 1, 2)).to_search() == {"term": {"day": "2024-01-02"}}
        moment = dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=IST)
        assert Eq("created_at", moment).to_search() == {
            "term": {"created_at": "2024-01-02T03:04:05.123456+05:30"}}
        key = uuid.UUID(int=7)
        assert Eq("u", key).to_search() == {"term": {"u": str(key)}}
        assert Eq("category", Category(id=3)).to_search() == {"term": {"category": 3}}
        assert Eq("flag", True).to_search() == {"term": {"flag": True}}
        assert Eq("status", Item.Status.QUEUED).to_search() == {"term": {"status": "queued"}}
        assert Eq("a", 1).to_search({"a": "alpha"}) == {"term": {"alpha": 1}}

    @override_settings(TIME_ZONE="Asia/Kolkata")
    def test_naive_datetimes_are_in_the_default_time_zone(self) -> None:
        naive = dt.datetime(2024, 1, 2, 3, 4, 5)
        with pytest.warns(RuntimeWarning, match="naive datetime"):
            assert Eq("created_at", naive).to_search(model=Item) == {
                "term": {"created_at": "2024-01-02T03:04:05+05:30"}}

    def test_values_are_prepared_by_the_model_field_like_matches(self) -> None:
        # An integer column compared with 1.5 as Django does: truncated (exact, a Decimal)
        # or rounded up (gte, a float).
        assert q(Eq("amount", Decimal("1.5"))) == {"term": {"amount": 1}}
        assert q(Range("amount", gte=1.5)) == {"range": {"amount": {"gte": 2}}}
        # A date column compared with an aware datetime: its date in the default time zone.
        moment = dt.datetime(2024, 1, 2, 23, 30, tzinfo=dt.timezone(-dt.timedelta(hours=3)))
        assert q(Eq("day", moment)) == {"term": {"day": "2024-01-03"}}
        assert q(Eq("category", Category(id=4))) == {"term": {"category": 4}}

    def test_exact_filters_use_the_keyword_subfield_of_text(self) -> None:
        assert q(Eq("name", "A b")) == {"term": {"name.raw": "A b"}}
        assert q(IEq("name", "A b")) == {
            "term": {"name.raw": {"value": "A b", "case_insensitive": True}}}
        assert q(Eq("owner__name", "bob")) == {"term": {"owner.name": "bob"}}

    def test_foreign_keys_are_found_as_key_object_or_column(self) -> None:
        assert q(Eq("category", 3)) == {"term": {"category": 3}}
        assert q(Eq("category__id", 3)) == {"term": {"category": 3}}
        assert q(Eq("owner", 2)) == {"term": {"owner.id": 2}}
        column = FieldMap({"properties": {"owner_id": {"type": "long"}}}, model=Item)
        assert compile_spec(Eq("owner", 2), fields=column) == {"term": {"owner_id": 2}}
        assert q(IsNull("owner")) == {"bool": {"must_not": [{"exists": {"field": "owner.id"}}]}}

    def test_in(self) -> None:
        assert q(In("status", ["a", None, "b", "a"])) == {"terms": {"status": ["a", "b"]}}
        assert q(In("status", [])) == {"match_none": {}}
        assert q(In("status", [None])) == {"match_none": {}}
        assert q(In("amount", [1, 2**40])) == {"terms": {"amount": [1]}}  # 2**40: no such int
        assert q(In("amount", [2**40])) == {"match_none": {}}

    def test_range_and_integer_bounds_like_django(self) -> None:
        assert q(Range("amount", gt=1, lte=5)) == {"range": {"amount": {"gt": 1, "lte": 5}}}
        # Bounds outside the field's range: every value is past it (only "has a value" is
        # left) or none can be (Django's FullResultSet / EmptyResultSet).
        assert q(Range("amount", gt=-(10**20))) == {"exists": {"field": "amount"}}
        assert q(Range("amount", lt=10**20, gte=0)) == {"range": {"amount": {"gte": 0}}}
        assert q(Range("amount", gt=10**20)) == {"match_none": {}}
        assert q(Range("amount", lte=-(10**20))) == {"match_none": {}}
        assert q(Range("id", gt=2**40)) == {"range": {"id": {"gt": 2**40}}}  # a long
        assert q(Eq("amount", 2**40)) == {"match_none": {}}
        moment = dt.datetime(2024, 1, 1, tzinfo=UTC)
        assert q(Range("created_at", gte=moment)) == {
            "range": {"created_at": {"gte": "2024-01-01T00:00:00+00:00"}}}

    def test_patterns_escape_wildcards_and_fold_case_on_request(self) -> None:
        assert q(Contains("name", "a*b?c\\")) == {
            "wildcard": {"name.raw": {"value": "*a\\*b\\?c\\\\*"}}}
        assert q(EndsWith("name", "%_", case_insensitive=True)) == {
            "wildcard": {"name.raw": {"value": "*%_", "case_insensitive": True}}}
        assert q(StartsWith("name", "Ab*", case_insensitive=True)) == {
            "prefix": {"name.raw": {"value": "Ab*", "case_insensitive": True}}}
        with pytest.raises(ValueError, match="None"):
            q(Contains("name", None))

    def test_case_insensitive_lookups_fold_like_postgresql_or_decline(self) -> None:
        # Without a folding normalizer the engine folds ASCII letters only...
        assert q(IEq("name", "Ab")) == {
            "term": {"name.raw": {"value": "Ab", "case_insensitive": True}}}
        with pytest.raises(NotSearchable, match="folds ASCII letters only, not 'ä'"):
            q(IEq("name", "bär"))
        with pytest.raises(NotSearchable, match="ASCII"):
            q(Contains("owner__name", "É", case_insensitive=True))
        assert q(Contains("name", "É")) == {"wildcard": {"name.raw": {"value": "*É*"}}}
        # ...with a keyword sub-field whose normalizer folds case, every letter folds.
        folded = FieldMap({"properties": {"name": {"type": "text", "fields": {
            "raw": {"type": "keyword"}, "folded": {"type": "keyword", "normalizer": "fold"}}},
            "status": {"type": "keyword", "normalizer": "lowercase"}}},
            model=Item, normalizers={"fold": {"type": "custom", "filter": ["lowercase"]}})
        assert compile_spec(IEq("name", "Bär"), fields=folded) == {
            "term": {"name.folded": {"value": "Bär"}}}
        assert compile_spec(StartsWith("name", "bÄ", case_insensitive=True), fields=folded) \
            == {"prefix": {"name.folded": {"value": "bÄ"}}}
        assert compile_spec(Eq("name", "Bär"), fields=folded) == {"term": {"name.raw": "Bär"}}
        assert compile_spec(IEq("status", "Q"), fields=folded) == {  # the built-in normalizer
            "term": {"status": {"value": "Q"}}}
        # Letters whose upper and lower case do not pair one to one (dotless i, sharp s,
        # final sigma) compare differently in lower case than in UPPER(): not exact.
        for text in ("\u0131", "stra\u00dfe", "\u03c3"):
            with pytest.raises(NotSearchable, match="folds differently"):
                compile_spec(IEq("name", text), fields=folded)
        other = FieldMap({"properties": {"name": {"type": "keyword", "normalizer": "ascii"}}},
                         normalizers={"ascii": {"type": "custom",
                                                "filter": ["lowercase", "asciifolding"]}})
        assert other.folded_field("name") is None

    def test_isnull(self) -> None:
        assert q(IsNull("score")) == {"bool": {"must_not": [{"exists": {"field": "score"}}]}}
        assert q(IsNull("score", False)) == {"exists": {"field": "score"}}
        assert q(Eq("score", None)) == q(IsNull("score"))
        assert q(IEq("name", None)) == q(IsNull("name"))


class TestComposites:
    def test_bool_shapes_and_simplifications(self) -> None:
        a, b = Eq("status", "a"), Eq("status", "b")
        ta, tb = {"term": {"status": "a"}}, {"term": {"status": "b"}}
        assert q(a & b) == {"bool": {"filter": [ta, tb]}}
        assert q(a | b) == {"bool": {"should": [ta, tb], "minimum_should_match": 1}}
        assert q(~a) == {"bool": {"must_not": [ta]}}
        assert q(Not(Not(a))) == ta
        assert q(And()) == {"match_all": {}}
        assert q(Or()) == {"match_none": {}}
        assert q(MatchAll()) == {"match_all": {}}
        assert q(And(a, MatchNone())) == {"match_none": {}}
        assert q(Or(a, MatchAll())) == {"match_all": {}}
        assert q(And(a, MatchAll())) == ta
        assert q(Or(a, MatchNone())) == ta
        assert q(Not(MatchAll())) == {"match_none": {}}
        assert q(Not(In("status", []))) == {"match_all": {}}

    def test_negation_is_the_complement_so_missing_values_are_kept(self) -> None:
        # ~Q(score=1) keeps NULL rows in Django; must_not keeps documents without a score.
        assert q(~Eq("score", 1)) == {"bool": {"must_not": [{"term": {"score": 1}}]}}

    def test_custom_nodes(self) -> None:
        class Opaque(Spec):
            pass

        class Searchable(Spec):
            def to_search(self, fields=None, *, model=None):
                return {"term": {"x": 1}}

        class Status(Eq):
            pass

        with pytest.raises(NotSearchable, match="Opaque has no search compilation"):
            q(Opaque())
        assert q(Searchable() & Eq("status", "a")) == {
            "bool": {"filter": [{"term": {"x": 1}}, {"term": {"status": "a"}}]}}
        assert q(Status("status", "a")) == {"term": {"status": "a"}}


class TestFieldMap:
    def test_not_searchable_exactly(self) -> None:
        text_only = FieldMap({"properties": {"name": {"type": "text"}}}, model=Item)
        with pytest.raises(NotSearchable, match="analyzed text") as info:
            compile_spec(Eq("name", "x"), fields=text_only)
        assert isinstance(info.value, Uncompilable)  # a source declines, like other filters
        assert info.value.field == "name"
        # Analyzed text still answers "is there a value".
        assert compile_spec(IsNull("name"), fields=text_only) == {
            "bool": {"must_not": [{"exists": {"field": "name"}}]}}
        normalized = FieldMap({"properties": {"status": {"type": "keyword",
                                                         "normalizer": "lowercase"}}})
        with pytest.raises(NotSearchable, match="normalizer"):
            compile_spec(Eq("status", "A"), fields=normalized)
        with pytest.raises(NotSearchable, match="not in the Document's mapping"):
            q(Eq("missing_field", 1))
        nested = FieldMap({"properties": {"owner": {"type": "nested", "properties": {
            "name": {"type": "keyword"}}}}}, model=Item)
        with pytest.raises(NotSearchable, match="nested"):
            compile_spec(Eq("owner__name", "x"), fields=nested)
        with pytest.raises(NotSearchable, match="needs a keyword field"):
            q(Contains("amount", "1"))

    def test_keyword_subfield_without_normalizer_is_preferred(self) -> None:
        mapping = {"properties": {"name": {"type": "text", "fields": {
            "lower": {"type": "keyword", "normalizer": "lowercase"},
            "raw": {"type": "keyword"}}}}}
        assert compile_spec(Eq("name", "A"), fields=FieldMap(mapping)) == {
            "term": {"name.raw": "A"}}

    def test_search_fields(self) -> None:
        mapping = {"properties": {"name": {"type": "text"}, "code": {"type": "keyword", "fields": {
            "text": {"type": "text"}}}, "ref": {"type": "keyword"}}}
        fm = FieldMap(mapping)
        assert [fm.search_field(p) for p in ("name", "code", "ref")] == [
            "name", "code.text", "ref"]
        with pytest.raises(NotSearchable):
            fm.search_field("nothing")

    def test_coerce(self) -> None:
        assert FieldMap.coerce(None).flat is None
        with pytest.raises(TypeError):
            FieldMap.coerce(42)


def test_the_compiler_imports_no_search_client() -> None:
    # The core compiles specs without elasticsearch/opensearch (they may not be installed).
    code = (
        "import sys, django; from django.conf import settings;"
        "settings.configure(INSTALLED_APPS=['django.contrib.contenttypes', 'django_filters',"
        " 'datapipe_django'], USE_TZ=True); django.setup();"
        "from datapipe_django.specs import Eq;"
        "import datapipe_django.search, datapipe_django.fetchers.search;"
        "assert Eq('a', 1).to_search() == {'term': {'a': 1}};"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('elasticsearch', 'opensearchpy', 'elastic_transport')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
