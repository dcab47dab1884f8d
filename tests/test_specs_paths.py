"""datapipe_django.specs.paths: the one resolver of ``a__b__c`` field paths."""

from __future__ import annotations

import pytest
from django.core.exceptions import FieldError
from hypothesis import given
from hypothesis import strategies as st

from datapipe_django.specs import paths
from tests.testapp.models import Category, Comment, Item, ItemDetail, Owner, Tag


def kinds(model: type, path: str) -> list[tuple[str, str]]:
    steps, _ = paths.resolve(model, path)
    return [(step.kind, step.attname) for step in steps]


@pytest.mark.parametrize(("path", "expected", "final"), [
    ("status", [("value", "status")], "status"),
    ("pk", [("value", "id")], "id"),
    # A path ending at a foreign key, or at its target, reads the local column (no join).
    ("category", [("value", "category_id")], "category"),
    ("category__id", [("value", "category_id")], "id"),
    ("category__pk", [("value", "category_id")], "id"),
    ("owner__name", [("fk", "owner_id"), ("value", "name")], "name"),
    # Reverse one-to-one and to-many relations end at the related row's pk.
    ("detail", [("reverse_one", "detail"), ("value", "id")], "id"),
    ("detail__note", [("reverse_one", "detail"), ("value", "note")], "note"),
    ("tags", [("many", "tags"), ("value", "id")], "id"),
    ("comments__body", [("many", "comments"), ("value", "body")], "body"),
    # A name that is no field (an annotation, a property) is read as an attribute.
    ("rank", [("attr", "rank")], None),
])
def test_resolve_reads_each_step_as_django_sql_does(path: str, expected: list[tuple[str, str]],
                                                    final: str | None) -> None:
    assert kinds(Item, path) == expected
    field = paths.model_field(Item, path)
    assert (field.name if field is not None else None) == final


def test_resolve_refuses_a_name_after_a_column() -> None:
    with pytest.raises(FieldError, match="follows a non-relation field"):
        paths.resolve(Item, "name__owner")


def test_crosses_many_knows_the_to_many_steps() -> None:
    assert paths.crosses_many(Item, "tags__name")
    assert paths.crosses_many(Item, "comments")
    assert not paths.crosses_many(Item, "owner__name")
    assert not paths.crosses_many(Item, "name__nope")  # does not resolve: not to-many
    assert paths.maybe_many("comments__body")
    assert not paths.maybe_many("status")


@pytest.mark.parametrize(("key", "expected"), [
    ("status", ("status", "exact", "status")),
    ("owner__name__icontains", ("owner__name", "icontains", "name")),
    ("amount__gte", ("amount", "gte", "amount")),
    ("category__in", ("category", "in", "category")),
    ("created_at__date__gte", ("created_at", "date__gte", "created_at")),
])
def test_split_lookup_cuts_path_and_lookup(key: str, expected: tuple[str, str, str]) -> None:
    path, lookup, field = paths.split_lookup(Item, key)
    assert (path, lookup, field.name if field is not None else None) == expected


def test_split_lookup_names_the_closest_field() -> None:
    with pytest.raises(FieldError, match=r"'stauts' into field of Item\. Did you mean 'status'\?"):
        paths.split_lookup(Item, "stauts__exact")


@pytest.mark.parametrize(("model", "path", "expected"), [
    (Item, "owner__name", None),
    (Item, "comments__author__name", None),
    (Item, "owner__nmae", "testapp.Owner has no field 'nmae' (did you mean 'name'?)"),
    (Item, "nmae", "testapp.Item has no field 'nmae' (did you mean 'name'?)"),
    (Item, "name__owner", "testapp.Item.name is not a relation"),
    (Item, "owner__name__x", "testapp.Owner.name is not a relation"),
    (Owner, "zzzz", "testapp.Owner has no field 'zzzz'"),
])
def test_path_error_says_why_with_a_suggestion(model: type, path: str,
                                               expected: str | None) -> None:
    assert paths.path_error(model, path) == expected


@given(st.sampled_from(["name", "status", "amount", "owner", "tags", "comments", "category"]),
       st.sampled_from(["", "x", "s", "e"]))
def test_path_error_is_none_exactly_when_every_name_resolves(name: str, typo: str) -> None:
    path = name + typo
    resolves = len(list(paths.fields_along(Item, path))) == 1
    assert (paths.path_error(Item, path) is None) == resolves


def test_joined_models_are_the_tables_a_filter_reads() -> None:
    assert paths.joined_models(Item, "owner") == frozenset()  # the local column
    assert paths.joined_models(Item, "owner__name") == {Owner}
    assert paths.joined_models(Item, "status") == frozenset()
    tags = paths.joined_models(Item, "tags__name")
    assert Tag in tags and Item.tags.through in tags
    assert paths.joined_models(Item, "comments__author__name") == {Comment, Owner}
    assert paths.joined_models(Item, "nope__name") == frozenset()


def test_forward_prefixes_are_what_select_related_takes() -> None:
    assert paths.forward_prefixes(Item, ["owner__name", "category__name", "name",
                                         "tags__name", "owner__email"]) == ["category", "owner"]
    assert paths.forward_prefixes(ItemDetail, ["item__owner__name"]) == ["item__owner"]


def test_local_attname_is_the_instance_attribute_of_a_local_field() -> None:
    assert paths.local_attname(Item, "tenant") == "tenant"
    assert paths.local_attname(Item, "owner") == "owner_id"
    assert paths.local_attname(Item, "owner_id") == "owner_id"
    assert paths.local_attname(Item, "owner__name") is None
    assert paths.local_attname(Item, "tags") is None
    assert paths.local_attname(Item, "nope") is None
    assert paths.local_attname(Item, None) is None


def test_field_of_finds_reverse_relations_by_accessor_only_when_asked() -> None:
    assert paths.field_of(Item, "pk") is Item._meta.pk
    assert paths.field_of(Category, "item_set") is None
    rel = paths.field_of(Category, "item_set", accessors=True)
    assert rel is not None and rel.related_model is Item
    assert paths.field_of(Item, "comments", accessors=True).related_model is Comment


@given(st.lists(st.from_regex(r"[a-z](_?[a-z0-9]){0,6}", fullmatch=True), min_size=1, max_size=4))
def test_head_is_the_field_a_path_starts_from(segments: list[str]) -> None:
    assert paths.head("__".join(segments)) == segments[0]
