"""``datapipe_django.specs.q`` and ``specs.memory``: every leaf and composite on data, ``to_q()``
in the database (SQLite and the real PostgreSQL) against ``matches()`` in memory."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

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
    StartsWith,
)
from tests.specs_data import (
    ALIASES,
    DANGLING,
    HAS_POSTGRES,
    MINUS330,
    PLUS5,
    UTC,
    assert_selects,
    db_pks,
    item,
    make_world,
    memory_pks,
    requires_postgres,
    store,
)
from tests.testapp.models import Category, Item

# --------------------------------------------------------------------------------------------
# Leaves and composites on data, in the database and in memory
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.django_db(databases=["default", "primary"] if HAS_POSTGRES else ["default"])
class TestOnData:
    @pytest.fixture(autouse=True)
    def rows(self, alias: str) -> None:
        make_world(alias)
        store(
            alias,
            [
                item(
                    1,
                    name="alpha",
                    amount=1,
                    score=1,
                    status="queued",
                    category_id=1,
                    owner_id=1,
                    day=dt.date(2024, 1, 1),
                    created_at=dt.datetime(2024, 1, 1, 23, 30, tzinfo=MINUS330),
                ),
                item(
                    2,
                    name="Beta",
                    amount=2,
                    score=None,
                    status="processed",
                    category_id=None,
                    owner_id=2,
                    active=False,
                    day=dt.date(2024, 1, 2),
                    created_at=dt.datetime(2024, 1, 2, 0, 0, tzinfo=UTC),
                ),
                item(
                    3,
                    name="gamma_%",
                    amount=-3,
                    score=5,
                    status="reversed",
                    category_id=DANGLING,
                    owner_id=DANGLING,
                    day=dt.date(2024, 1, 3),
                    created_at=dt.datetime(2024, 1, 3, 4, 0, 0, 500, tzinfo=PLUS5),
                ),
                item(
                    4,
                    name="",
                    amount=10,
                    score=0,
                    status="queued",
                    category_id=2,
                    owner_id=None,
                    day=dt.date(2024, 1, 4),
                    created_at=dt.datetime(2024, 1, 4, 12, tzinfo=UTC),
                ),
            ],
        )

    def test_eq(self, alias: str) -> None:
        assert_selects(alias, Eq("status", "queued"), {1, 4})
        assert_selects(alias, Eq("amount", Decimal("1.0")), {1})
        assert_selects(alias, Eq("active", False), {2})
        assert_selects(alias, Eq("day", dt.date(2024, 1, 3)), {3})
        assert_selects(alias, Eq("name", ""), {4})
        assert_selects(alias, Eq("score", None), {2})
        assert_selects(alias, Eq("created_at", dt.datetime(2024, 1, 2, tzinfo=UTC)), {2})

    def test_eq_through_relations(self, alias: str) -> None:
        assert_selects(alias, Eq("category", 1), {1})
        assert_selects(alias, Eq("category_id", 1), {1})
        assert_selects(alias, Eq("category__pk", DANGLING), {3})  # Django trims the join
        assert_selects(alias, Eq("category__name", "bücher"), {4})
        assert_selects(alias, Eq("owner__name", "bob"), {2})

    def test_eq_model_instance_compares_pk(self, alias: str) -> None:
        books = Category.objects.using(alias).get(pk=1)
        assert_selects(alias, Eq("category", books), {1})

    def test_negation_keeps_nulls_like_django(self, alias: str) -> None:
        assert_selects(alias, ~Eq("score", 1), {2, 3, 4})
        assert_selects(alias, ~Eq("category", 1), {2, 3, 4})
        assert_selects(alias, ~Eq("category__name", "Books"), {2, 3, 4})
        assert_selects(alias, ~Eq("owner__name", "bob"), {1, 3, 4})
        assert_selects(alias, ~Range("score", gte=1), {2, 4})
        assert_selects(alias, ~(Eq("score", 1) & Eq("active", True)), {2, 3, 4})
        assert_selects(alias, ~(Eq("score", 5) | Eq("owner__name", "Ärger")), {2, 4})

    def test_in(self, alias: str) -> None:
        assert_selects(alias, In("amount", [1, 2, 99]), {1, 2})
        assert_selects(alias, In("score", [1, None]), {1})
        assert_selects(alias, In("amount", []), set())
        assert_selects(alias, ~In("amount", []), {1, 2, 3, 4})
        assert_selects(alias, In("category", [1, DANGLING]), {1, 3})
        assert_selects(alias, ~In("score", [0, 1]), {2, 3})

    def test_range(self, alias: str) -> None:
        assert_selects(alias, Range("amount", gt=1), {2, 4})
        assert_selects(alias, Range("amount", gte=1, lte=2), {1, 2})
        # Values are prepared as Django prepares them for an IntegerField: a Decimal is
        # truncated (amount < 1), a float is rounded up for lt/gte (amount < 2).
        assert_selects(alias, Range("amount", lt=Decimal("1.5")), {3})
        assert_selects(alias, Range("amount", lt=1.5), {1, 3})
        assert_selects(alias, Range("score", gte=0), {1, 3, 4})
        assert_selects(alias, Range("day", gte=dt.date(2024, 1, 2), lt=dt.date(2024, 1, 4)), {2, 3})
        three_utc = dt.datetime(2024, 1, 2, 3, tzinfo=UTC)  # item 1: 23:30 at -03:30
        assert_selects(alias, Range("created_at", gte=three_utc), {1, 3, 4})
        assert_selects(alias, Range("created_at", gt=three_utc), {3, 4})

    def test_range_with_out_of_range_integers_never_selects_null(self, alias: str) -> None:
        # Django drops `score > -10**20` entirely ("full result set"), which would let the
        # NULL score in; the spec keeps SQL's semantics on every backend.
        assert_selects(alias, Range("score", gt=-(10**20)), {1, 3, 4})
        assert_selects(alias, Range("score", lt=10**20), {1, 3, 4})
        assert_selects(alias, Range("score", gt=10**20), set())
        assert_selects(alias, ~Range("score", gt=-(10**20)), {2})
        assert_selects(alias, Eq("score", 10**20), set())
        assert_selects(alias, ~Eq("score", 10**20), {1, 2, 3, 4})

    def test_plain_django_q_lets_null_in_on_integer_underflow(self, alias: str) -> None:
        # Why Range.to_q() adds IS NOT NULL: Django's own lookup drops the condition.
        raw = set(
            Item.objects.using(alias).filter(score__gt=-(10**20)).values_list("pk", flat=True)
        )
        assert raw == {1, 2, 3, 4}
        assert db_pks(alias, Range("score", gt=-(10**20))) == {1, 3, 4}

    def test_isnull(self, alias: str) -> None:
        assert_selects(alias, IsNull("score"), {2})
        assert_selects(alias, IsNull("score", False), {1, 3, 4})
        assert_selects(alias, IsNull("category"), {2})  # a dangling id is not NULL
        assert_selects(alias, IsNull("category__name"), {2, 3})  # ...but has no row
        assert_selects(alias, ~IsNull("category__name"), {1, 4})
        assert_selects(alias, IsNull("owner__name", False), {1, 2})

    def test_case_sensitive_patterns(self, alias: str) -> None:
        assert_selects(alias, Contains("name", "%"), {3})  # LIKE wildcards are literal
        assert_selects(alias, Contains("name", "_"), {3})
        assert_selects(alias, StartsWith("name", "gam"), {3})
        assert_selects(alias, EndsWith("name", "ta"), {2})
        assert_selects(alias, Contains("owner__name", "ob"), {2})
        assert_selects(alias, ~Contains("owner__name", "ob"), {1, 3, 4})
        assert_selects(alias, Contains("name", ""), {1, 2, 3, 4})

    def test_case_insensitive_ascii(self, alias: str) -> None:
        assert_selects(alias, IEq("name", "BETA"), {2})
        assert_selects(alias, Contains("name", "ET", case_insensitive=True), {2})
        assert_selects(alias, StartsWith("name", "ALP", case_insensitive=True), {1})
        assert_selects(alias, EndsWith("name", "_%", case_insensitive=True), {3})
        assert_selects(alias, IEq("owner__name", "BOB"), {2})

    def test_composites(self, alias: str) -> None:
        assert_selects(alias, Eq("status", "queued") & Range("amount", gt=5), {4})
        assert_selects(alias, Eq("status", "reversed") | IsNull("score"), {2, 3})
        assert_selects(alias, Or(MatchAll(), Eq("amount", 1)), {1, 2, 3, 4})
        assert_selects(alias, And(), {1, 2, 3, 4})
        assert_selects(alias, Or(), set())
        assert_selects(alias, MatchNone(), set())
        assert_selects(alias, ~MatchNone(), {1, 2, 3, 4})
        assert_selects(alias, ~MatchAll(), set())
        assert_selects(alias, Not(And()), set())
        assert_selects(alias, Or(In("amount", []), Eq("amount", 2)), {2})

    def test_matches_on_unsaved_style_instances(self, alias: str) -> None:
        # Instances as another source would build them: related rows not loaded yet.
        items = list(Item.objects.using(alias).all())
        spec = Eq("owner__name", "bob") | IsNull("category__name")
        assert memory_pks(alias, spec, items) == db_pks(alias, spec) == {2, 3}


@pytest.mark.django_db(databases=["default", "primary"])
@requires_postgres
@pytest.mark.postgres
def test_case_insensitive_unicode_agrees_with_postgres_upper() -> None:
    make_world("primary")
    names = ["Ärger", "ärger", "STRASSE", "straße", "STRAßE", "ǆemal", "ǄEMAL", "ıi", "Éa"]
    store("primary", [item(pk, name=name) for pk, name in enumerate(names, start=1)])
    for needle in ["ärger", "ÄRGER", "strasse", "STRAßE", "ß", "ǅ", "I", "é"]:
        for spec in (
            IEq("name", needle),
            Contains("name", needle, case_insensitive=True),
            StartsWith("name", needle, case_insensitive=True),
            EndsWith("name", needle, case_insensitive=True),
        ):
            assert db_pks("primary", spec) == memory_pks("primary", spec), spec
