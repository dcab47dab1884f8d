"""Leaves through a to-many relation: each is its own "some related row matches".

``And(Eq("comments__body", ...), Eq("comments__tenant", ...))`` selects what Django's chained
``filter()`` and :meth:`Spec.matches` select (two different comments may satisfy the two
leaves), on SQLite, PostgreSQL and MariaDB, under ``&``, ``|`` and ``~``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import django_filters
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datapipe_django.specs import And, Eq, In, IsNull, Not, Or, Range, Spec, compile_filterset
from tests.conftest import engine_databases
from tests.testapp.models import Comment, Item

pytestmark = pytest.mark.django_db(databases=engine_databases())


def _item(pk: int) -> Item:
    return Item(id=pk, tenant="t1", name=f"item {pk}", status="queued", amount=pk,
                created_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC), day=dt.date(2024, 1, 1))


def _world(alias: str, comments: dict[int, list[tuple[str, str]]]) -> None:
    Comment.objects.using(alias).all().delete()
    Item.objects.using(alias).all().delete()
    Item.objects.using(alias).bulk_create([_item(pk) for pk in comments])
    Comment.objects.using(alias).bulk_create(
        [Comment(item_id=pk, body=body, tenant=tenant)
         for pk, rows in comments.items() for body, tenant in rows]
    )


def _q_pks(alias: str, spec: Spec) -> list[int]:
    return sorted(Item.objects.using(alias).filter(spec.to_q()).values_list("pk", flat=True))


def _memory_pks(alias: str, spec: Spec) -> list[int]:
    items = Item.objects.using(alias).prefetch_related("comments")
    return sorted(obj.pk for obj in items if spec.matches(obj))


# The issue's example: item 1 has comment A (body "1", tenant "4") and B (body "2", tenant
# "3"); item 2 has one comment (body "1", tenant "3"); item 3 none.
EXAMPLE = {1: [("1", "4"), ("2", "3")], 2: [("1", "3")], 3: []}


def test_two_leaves_through_one_to_many_relation_are_independent(engine_alias: str) -> None:
    _world(engine_alias, EXAMPLE)
    spec = And(Eq("comments__body", "1"), Eq("comments__tenant", "3"))
    chained = sorted(Item.objects.using(engine_alias).filter(comments__body="1")
                     .filter(comments__tenant="3").values_list("pk", flat=True))
    assert chained == [1, 2]
    assert _q_pks(engine_alias, spec) == chained
    assert _memory_pks(engine_alias, spec) == chained
    # ~ is NOT EXISTS: no related row matches.
    assert _q_pks(engine_alias, ~Eq("comments__body", "2")) == [2, 3]
    assert _memory_pks(engine_alias, ~Eq("comments__body", "2")) == [2, 3]
    neither = Not(spec)
    assert _q_pks(engine_alias, neither) == _memory_pks(engine_alias, neither) == [3]
    either = Or(Eq("comments__body", "2"), And(Eq("comments__tenant", "3"), Eq("amount", 2)))
    assert _q_pks(engine_alias, either) == _memory_pks(engine_alias, either) == [1, 2]
    assert _q_pks(engine_alias, IsNull("comments")) == _memory_pks(engine_alias,
                                                                    IsNull("comments")) == [3]


class ByComment(django_filters.FilterSet):
    """Filters over ``Item.comments``: django-filter applies each in its own ``filter()``."""

    body = django_filters.CharFilter(field_name="comments__body")
    tenant = django_filters.CharFilter(field_name="comments__tenant")
    not_body = django_filters.CharFilter(field_name="comments__body", exclude=True)
    bodies = django_filters.MultipleChoiceFilter(
        field_name="comments__body", choices=[(v, v) for v in "123"])
    all_bodies = django_filters.MultipleChoiceFilter(
        field_name="comments__body", choices=[(v, v) for v in "123"], conjoined=True)
    commented = django_filters.BooleanFilter(field_name="comments", lookup_expr="isnull",
                                             exclude=True)

    class Meta:
        model = Item
        fields: list[str] = []


def _qs_pks(alias: str, params: dict[str, Any]) -> list[int]:
    filterset = ByComment(params, queryset=Item.objects.using(alias).all())
    assert filterset.is_valid(), filterset.errors
    return sorted(set(filterset.qs.values_list("pk", flat=True)))


def test_the_issues_example_with_numbers(engine_alias: str) -> None:
    """Issue 10's example as ``Owner.items`` (price = amount, rating = score): owner 1 has item
    A (1, rated 4) and item B (2, rated 3), owner 2 one item (1, rated 3), owner 3 none."""
    from tests.testapp.models import Owner

    alias = engine_alias
    Item.objects.using(alias).all().delete()
    Owner.objects.using(alias).all().delete()
    Owner.objects.using(alias).bulk_create([Owner(id=pk, name=f"o{pk}") for pk in (1, 2, 3)])
    rows = [(10, 1, 1, 4), (11, 1, 2, 3), (12, 2, 1, 3)]
    Item.objects.using(alias).bulk_create(
        [Item(id=pk, tenant="t1", name="x", status="queued", amount=amount, score=score,
              owner_id=owner, created_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
              day=dt.date(2024, 1, 1)) for pk, owner, amount, score in rows])
    owners = Owner.objects.using(alias)

    def q_pks(spec: Spec) -> list[int]:
        return sorted(owners.filter(spec.to_q()).values_list("pk", flat=True))

    def memory(spec: Spec) -> list[int]:
        return sorted(o.pk for o in owners.prefetch_related("items") if spec.matches(o))

    spec = And(Eq("items__amount", 1), Eq("items__score", 3))
    chained = sorted(owners.filter(items__amount=1).filter(items__score=3)
                     .values_list("pk", flat=True))
    assert chained == q_pks(spec) == memory(spec) == [1, 2]
    # One filter() call needs one item with both: that is a different question.
    assert list(owners.filter(items__amount=1, items__score=3).values_list("pk", flat=True)) \
        == [2]
    for other in (~spec, spec | Range("items__score", gte=4), ~Range("items__amount", gt=1),
                  Range("items__amount", lte=1) & Range("items__score", gte=4)):
        assert q_pks(other) == memory(other), other
    assert q_pks(~spec) == [3]


def test_filterset_over_a_to_many_relation_compiles(engine_alias: str) -> None:
    _world(engine_alias, EXAMPLE)
    params = {"body": "1", "tenant": "3"}
    spec = compile_filterset(ByComment, params)
    expected = _qs_pks(engine_alias, params)
    assert expected == [1, 2]
    assert _q_pks(engine_alias, spec) == _memory_pks(engine_alias, spec) == expected


_TEXT = st.sampled_from(["1", "2", "3"])
_LEAF = st.one_of(
    st.builds(Eq, st.sampled_from(["comments__body", "comments__tenant"]), _TEXT),
    st.builds(In, st.sampled_from(["comments__body", "comments__tenant"]),
              st.lists(_TEXT, max_size=2)),
    st.builds(lambda n: Range("amount", gte=n), st.integers(0, 4)),
    st.builds(IsNull, st.just("comments__author"), st.booleans()),
)
_SPECS = st.recursive(
    _LEAF,
    lambda inner: st.one_of(
        st.builds(lambda a, b: a & b, inner, inner),
        st.builds(lambda a, b: a | b, inner, inner),
        st.builds(lambda a: ~a, inner),
    ),
    max_leaves=5,
)
_WORLDS = st.dictionaries(st.integers(1, 5), st.lists(st.tuples(_TEXT, _TEXT), max_size=3),
                          min_size=1, max_size=5)

_PARAMS = st.fixed_dictionaries({}, optional={
    "body": _TEXT, "tenant": _TEXT, "not_body": _TEXT,
    "bodies": st.lists(_TEXT, min_size=1, max_size=2),
    "all_bodies": st.lists(_TEXT, min_size=1, max_size=2),
    "commented": st.sampled_from(["true", "false"]),
})


def _chained(alias: str, spec: Spec) -> list[int] | None:
    """Django's own answer for an And of plain to-many leaves: one filter() call per leaf."""
    if not isinstance(spec, And) or not all(isinstance(c, Eq) for c in spec.children):
        return None
    qs = Item.objects.using(alias).all()
    for child in spec.children:
        assert isinstance(child, Eq)
        qs = qs.filter(**{child.field: child.value})
    return sorted(set(qs.values_list("pk", flat=True)))


@pytest.mark.parametrize("alias", ["default", "primary", "archive"])
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(world=_WORLDS, spec=_SPECS, pair=st.tuples(_TEXT, _TEXT), params=_PARAMS)
def test_to_q_matches_and_chained_filter_agree(alias: str, world: dict[int, Any], spec: Spec,
                                               pair: tuple[str, str],
                                               params: dict[str, Any]) -> None:
    from tests.conftest import require_alias

    require_alias(alias)
    _world(alias, world)
    compiled = compile_filterset(ByComment, params)
    expected = _qs_pks(alias, params)
    assert _q_pks(alias, compiled) == _memory_pks(alias, compiled) == expected, repr(compiled)
    assert _q_pks(alias, spec) == _memory_pks(alias, spec), repr(spec)
    two = And(Eq("comments__body", pair[0]), Eq("comments__tenant", pair[1]))
    for candidate in (two, ~two, two | Eq("comments__body", pair[1]), spec & two):
        assert _q_pks(alias, candidate) == _memory_pks(alias, candidate), repr(candidate)
    assert _chained(alias, two) == _q_pks(alias, two)


def test_to_search_agrees_on_an_object_array() -> None:
    """On the engine a to-many relation is an object array: a term query on ``comments.body``
    means "some comment has it", per leaf, as :meth:`Spec.matches` and ``to_q()`` say."""
    from datapipe_django.search.documents import adapter_for
    from tests.conftest import require_search
    from tests.search_documents import PREFIX, ItemDocument

    require_search()
    client = adapter_for(ItemDocument).client()
    index = f"{PREFIX}-to-many"
    client.indices.delete(index=index, ignore_unavailable=True)
    client.indices.create(index=index, mappings={"properties": {"comments": {
        "type": "object",
        "properties": {"body": {"type": "keyword"}, "tenant": {"type": "keyword"}}}}})
    try:
        for pk, rows in EXAMPLE.items():
            client.index(index=index, id=str(pk), document={
                "comments": [{"body": body, "tenant": tenant} for body, tenant in rows]})
        client.indices.refresh(index=index)
        _world("default", EXAMPLE)
        two = And(Eq("comments__body", "1"), Eq("comments__tenant", "3"))
        for spec in (two, ~two, ~Eq("comments__body", "2"), two | Eq("comments__body", "2")):
            hits = client.search(index=index, query=spec.to_search(), size=10)["hits"]["hits"]
            engine = sorted(int(hit["_id"]) for hit in hits)
            assert engine == _memory_pks("default", spec) == _q_pks("default", spec), spec
    finally:
        client.indices.delete(index=index, ignore_unavailable=True)

