"""``datapipe_django.specs.tree``: the Spec tree itself (operators, flattening, equality,
what a leaf reads)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db.models import Q

from datapipe_django.specs import (
    And,
    Contains,
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

# --------------------------------------------------------------------------------------------
# The tree itself
# --------------------------------------------------------------------------------------------


class TestTree:
    def test_operators_build_flat_composites(self) -> None:
        a, b, c = Eq("status", "queued"), Eq("amount", 1), IsNull("score")
        assert a & b == And(a, b)
        assert (a & b) & c == And(a, b, c)
        assert a & (b & c) == And(a, b, c)
        assert a | b | c == Or(a, b, c)
        assert ~a == Not(a)
        assert ~~a == a
        assert MatchAll() & a == a
        assert a & MatchAll() == a
        assert MatchNone() | a == a
        assert MatchAll() & MatchAll() == MatchAll()

    def test_equality_hash_and_repr(self) -> None:
        assert Eq("a", 1) == Eq("a", 1)
        assert Eq("a", 1) != IEq("a", 1)
        assert In("a", [1, 2]) == In("a", (1, 2))
        assert hash(And(Eq("a", 1), Not(In("b", [1])))) == hash(And(Eq("a", 1), ~In("b", [1])))
        assert repr(And(Eq("a", 1), Not(IsNull("b")))) == (
            "And(Eq(field='a', value=1), Not(IsNull(field='b', value=True)))"
        )
        assert repr(Range("amount", gte=1)) == (
            "Range(field='amount', gt=None, gte=1, lt=None, lte=None)"
        )

    def test_fields(self) -> None:
        spec = Eq("status", "x") & ~(In("amount", [1]) | Contains("owner__name", "b"))
        assert spec.fields() == {"status", "amount", "owner__name"}
        assert MatchAll().fields() == set()

    def test_specs_are_immutable(self) -> None:
        with pytest.raises(AttributeError):
            Eq("a", 1).value = 2  # type: ignore[misc]
        with pytest.raises(AttributeError):
            And(Eq("a", 1)).children = ()  # type: ignore[misc]

    def test_bad_construction(self) -> None:
        with pytest.raises(ValueError, match="at least one"):
            Range("amount")
        with pytest.raises(TypeError):
            In("status", "queued")
        with pytest.raises(ValueError, match="True or False"):
            IsNull("score", 1)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            And(Eq("a", 1), Q(a=1))  # type: ignore[arg-type]

    def test_lookup_names_for_compilers(self) -> None:
        assert Eq("a", 1).lookup == "exact"
        assert Contains("a", "x", case_insensitive=True).lookup == "icontains"
        assert StartsWith("a", "x").lookup == "startswith"
        assert Range("a", gt=1, lte=3).bounds() == {"gt": 1, "lte": 3}
        assert (Eq("a", 1) & ~Eq("b", 2)).children_specs() == (Eq("a", 1), Not(Eq("b", 2)))

    def test_to_search_builds_plain_dicts(self) -> None:
        # Compiled without a search client (tests/test_search_query.py covers every node).
        assert Eq("a", 1).to_search() == {"term": {"a": 1}}
        assert (Eq("owner__name", "x") & ~IsNull("b")).to_search() == {
            "bool": {"filter": [{"term": {"owner.name": "x"}}, {"exists": {"field": "b"}}]}
        }

    def test_to_q_shapes(self) -> None:
        assert Eq("status", "queued").to_q() == Q(status__exact="queued")
        assert MatchAll().to_q() == Q()
        assert And().to_q() == Q()
        assert Or().to_q() == MatchNone().to_q()
        assert Not(MatchAll()).to_q() == MatchNone().to_q()
        assert Or(Eq("a", 1), MatchAll()).to_q() == Q()

    def test_matches_plain_objects_and_mappings(self) -> None:
        class Obj:
            def __init__(self, **kw: Any) -> None:
                self.__dict__.update(kw)

        obj = Obj(name="Ärger", amount=3, owner=Obj(name="bob"), category=None)
        assert Eq("owner__name", "bob").matches(obj)
        assert IEq("name", "ärger").matches(obj)
        assert Range("amount", gt=Decimal("2.5")).matches(obj)
        assert not Eq("category__name", "x").matches(obj)
        assert IsNull("category__name").matches(obj)
        assert Not(Eq("category__name", "x")).matches(obj)
        assert In("amount", [1, 3]).matches({"amount": 3})
        with pytest.raises(AttributeError):
            Eq("nope", 1).matches(obj)
