"""``expand``: parsing, validation (unknown, depth, auth type), ``always``, ExpandableField's
nested rendering, and fields visible per auth type (``AuthTypeFieldsMixin``)."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.db.models import prefetch_related_objects
from django.http import QueryDict
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from hypothesis import given
from hypothesis import strategies as st
from rest_framework import serializers
from rest_framework.test import APIRequestFactory

from datapipe_django import Pipeline, PipelineRequest, ValidationFailed
from datapipe_django.enrichers import PrefetchEnricher
from datapipe_django.fetchers import ORMFetcher
from datapipe_django.rest import AuthTypeFieldsMixin, ExpandableField, PipelineViewSet, parse_expand
from tests.testapp.models import Category, Comment, Item, ItemDetail, Owner, Tag
from tests.testapp.serializers import CategorySerializer, TagSerializer

BASE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


# -- parsing -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "expected"), [
    ("expand[]=a&expand[]=b.c", {"a", "b.c"}),
    ("expand=a,b.c", {"a", "b.c"}),
    ("expand=a&expand=b&expand[]=c,d", {"a", "b", "c", "d"}),
    ("expand= a , ,b.c,&expand[]=", {"a", "b.c"}),
    ("other=1", set()),
])
def test_parse_expand_takes_both_forms(query, expected):
    assert parse_expand(QueryDict(query)) == expected


def test_a_pipeline_request_normalises_expand_too():
    assert PipelineRequest(expand="a, b.c").expand == {"a", "b.c"}
    assert PipelineRequest(expand=["a", "b,c"]).expand == {"a", "b", "c"}


@given(st.lists(st.tuples(st.sampled_from(["expand", "expand[]"]),
                          st.text(alphabet=st.sampled_from("ab.,_ \t\n\x0b\x1fé"), max_size=8)),
                max_size=6))
def test_the_query_string_and_a_pipeline_request_split_expand_by_one_rule(pairs):
    params = QueryDict(mutable=True)
    for name, value in pairs:
        params.appendlist(name, value)
    values = [v for name in ("expand[]", "expand") for v in params.getlist(name)]
    assert parse_expand(params) == PipelineRequest(expand=values).expand
    # Only spaces and tabs are blank: a control character is a (bad) name, not nothing.
    assert {n for n in parse_expand(params) if n.strip(" \t") != n or not n} == set()
    assert all(n in "".join(values) for n in parse_expand(params))


@pytest.mark.django_db
def test_a_control_character_in_expand_is_a_name_that_the_request_refuses():
    with CaptureQueriesContext(connection) as queries:
        response = get("expand=owner,%0B")
    assert response.status_code == 400, response.data
    assert list(response.data) == ["expand"]
    assert queries.captured_queries == []


# -- an API with every kind of expansion -------------------------------------------------------

# Owner's email shows to private callers only here (the test app's OwnerSerializer always
# shows it); Category and Tag render as the test app's serializers do.
class OwnerSerializer(AuthTypeFieldsMixin, serializers.ModelSerializer):
    class Meta:
        model = Owner
        fields = ("id", "name", "email")
        field_auth_types = {"email": {"private"}}


class CommentSerializer(serializers.ModelSerializer):
    author = ExpandableField(OwnerSerializer)

    class Meta:
        model = Comment
        fields = ("id", "body", "author")


class DetailSerializer(serializers.ModelSerializer):
    reviewer = ExpandableField(OwnerSerializer)

    class Meta:
        model = ItemDetail
        fields = ("id", "note", "reviewer")


class ItemSerializer(AuthTypeFieldsMixin, serializers.ModelSerializer):
    owner = ExpandableField(OwnerSerializer)
    category = ExpandableField(CategorySerializer)
    tags = ExpandableField(TagSerializer, many=True)
    comments = ExpandableField(CommentSerializer, many=True)
    detail = ExpandableField(DetailSerializer)

    class Meta:
        model = Item
        fields = ("id", "name", "score", "owner", "category", "tags", "comments", "detail")
        field_auth_types = {"score": {"private"}, "category": {"private"}}


pipeline = Pipeline(
    "expand-test", model=Item, tenant_field="tenant", ordering=("id",), register=False,
    fetchers=[ORMFetcher("default")],
    enrichers=[
        PrefetchEnricher("owner"),
        PrefetchEnricher("category", auth_types={"private"}),
        PrefetchEnricher("tags", always=True),
        PrefetchEnricher("comments"),
        PrefetchEnricher("comments.author"),
        PrefetchEnricher("detail"),
        PrefetchEnricher("detail.reviewer", auth_types={"private"}),
    ],
)


class ItemViewSet(PipelineViewSet):
    pipeline = pipeline
    serializer_class = ItemSerializer

    def get_tenant(self):
        return "t1"

    def get_auth_type(self):
        return self.request.headers.get("X-Auth-Type", "public")


list_view = ItemViewSet.as_view({"get": "list"})
detail_view = ItemViewSet.as_view({"get": "retrieve"})
factory = APIRequestFactory()


def get(query="", auth_type="public", pk=None):
    request = factory.get(f"/items?{query}", HTTP_X_AUTH_TYPE=auth_type)
    response = detail_view(request, pk=pk) if pk is not None else list_view(request)
    response.render()
    return response


@pytest.fixture
def data(db):
    Owner.objects.bulk_create([Owner(id=1, name="Ann", email="ann@x"),
                               Owner(id=2, name="Bob", email="bob@x")])
    Category.objects.create(id=1, name="cat")
    Tag.objects.bulk_create([Tag(id=1, name="red"), Tag(id=2, name="blue")])
    Item.objects.bulk_create([
        Item(id=i, tenant="t1", name=f"item {i}", status="queued", amount=i, score=i * 10,
             created_at=BASE, day=BASE.date(), owner_id=i % 2 + 1, category_id=1)
        for i in (1, 2)
    ])
    Item.tags.through.objects.bulk_create([Item.tags.through(item_id=1, tag_id=1),
                                           Item.tags.through(item_id=1, tag_id=2)])
    Comment.objects.bulk_create([Comment(id=1, item_id=1, author_id=1, body="hi"),
                                 Comment(id=2, item_id=1, author_id=2, body="yo")])
    ItemDetail.objects.create(id=1, item_id=2, note="checked", reviewer_id=1)


# -- validation --------------------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize(("query", "message"), [
    ("expand[]=nope", "Unknown expansion 'nope'."),
    ("expand=owner.nope", "Unknown expansion 'owner.nope'."),
    ("expand=comments.author.items", "'comments.author.items' is nested deeper than 2 levels."),
    ("expand=owner.", "Unknown expansion 'owner.'."),
])
def test_a_bad_expansion_is_a_400_naming_it_and_nothing_is_queried(query, message):
    with CaptureQueriesContext(connection) as queries:
        response = get(query)
    assert response.status_code == 400
    assert response.data == {"expand": [message]}
    assert len(queries) == 0


@pytest.mark.django_db
def test_a_forbidden_expansion_reads_exactly_like_an_unknown_one():
    # `category` exists for private callers only; `detail.reviewer` too, below a public parent.
    for name in ("category", "detail.reviewer"):
        forbidden = get(f"expand={name}")
        assert forbidden.status_code == 400
        assert forbidden.content == get(f"expand=zz{name}").content.replace(b"zz", b"")
    assert get("expand=category,detail.reviewer", auth_type="private").status_code == 200


@pytest.mark.django_db
def test_every_error_is_listed():
    response = get("expand=nope,owner,a.b.c.d")
    assert response.data == {"expand": ["'a.b.c.d' is nested deeper than 2 levels.",
                                        "Unknown expansion 'nope'."]}


@pytest.mark.django_db
def test_the_depth_limit_is_a_setting():
    with override_settings(DATAPIPE={"MAX_EXPAND_DEPTH": 1}):
        assert get("expand=comments.author").data == {
            "expand": ["'comments.author' is nested deeper than 1 level."]}


def test_without_an_http_layer_the_pipeline_raises_validation_failed():
    with pytest.raises(ValidationFailed) as info:
        pipeline.execute(tenant="t1", expand={"category"}, auth_type="public")
    assert info.value.errors == {"expand": ["Unknown expansion 'category'."]}


# -- rendering ---------------------------------------------------------------------------------

def by_id(response):
    return {row["id"]: row for row in response.data["items"]}


def test_relations_render_as_ids_unless_expanded(data):
    rows = by_id(get())
    assert rows[1]["owner"] == 2 and rows[1]["comments"] is None and rows[1]["detail"] is None
    # `tags` is declared always=True: expanded without being asked.
    assert rows[1]["tags"] == [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
    assert rows[2]["tags"] == []


def test_nested_expansion_is_passed_down(data):
    rows = by_id(get("expand[]=comments"))
    assert rows[1]["comments"] == [{"id": 1, "body": "hi", "author": 1},
                                   {"id": 2, "body": "yo", "author": 2}]
    rows = by_id(get("expand[]=comments.author&expand[]=detail"))
    assert rows[1]["comments"][0]["author"] == {"id": 1, "name": "Ann"}
    assert rows[2]["detail"] == {"id": 1, "note": "checked", "reviewer": 1}
    assert rows[1]["detail"] is None  # no detail row: null, not an error


def test_rendering_issues_no_query(data):
    with CaptureQueriesContext(connection) as queries:
        response = get("expand=owner,comments.author,detail", auth_type="private")
    # The page with the owner joined, then one per relation that cannot be joined into it:
    # tags, comments (their authors selected with them), detail.
    assert len(queries) == 4, [q["sql"] for q in queries]
    assert "testapp_owner" in queries[0]["sql"]
    comments = next(q["sql"] for q in queries if 'FROM "testapp_comment"' in q["sql"])
    assert 'JOIN "testapp_owner"' in comments
    assert response.status_code == 200


def test_retrieve_expands_too(data):
    response = get("expand=detail.reviewer", auth_type="private", pk=2)
    assert response.data["detail"] == {
        "id": 1, "note": "checked", "reviewer": {"id": 1, "name": "Ann", "email": "ann@x"}}


# -- fields per auth type ----------------------------------------------------------------------

def test_a_public_caller_never_receives_a_private_field_expanded_or_not(data):
    public = by_id(get("expand=owner"))[1]
    assert "score" not in public and "category" not in public
    assert public["owner"] == {"id": 2, "name": "Bob"}  # no email, nested too
    private = by_id(get("expand=owner,category", auth_type="private"))[1]
    assert private["score"] == 10 and private["category"] == {"id": 1, "name": "cat"}
    assert private["owner"] == {"id": 2, "name": "Bob", "email": "bob@x"}


def test_without_an_auth_type_only_unrestricted_fields_are_rendered():
    rendered = OwnerSerializer(Owner(id=1, name="Ann", email="a@x")).data
    assert rendered == {"id": 1, "name": "Ann"}


def test_field_auth_types_must_name_fields():
    class Broken(AuthTypeFieldsMixin, serializers.ModelSerializer):
        class Meta:
            model = Owner
            fields = ("id",)
            field_auth_types = {"email": {"private"}}

    with pytest.raises(ImproperlyConfigured, match="names 'email', which is not a field"):
        Broken(Owner(id=1)).data  # noqa: B018

    class Stringly(AuthTypeFieldsMixin, serializers.ModelSerializer):
        class Meta:
            model = Owner
            fields = ("id", "email")
            field_auth_types = {"email": "private"}

    with pytest.raises(ImproperlyConfigured, match="collections of auth types"):
        Stringly(Owner(id=1)).data  # noqa: B018


def test_nested_serializers_are_built_once_per_field_not_per_row(data, monkeypatch):
    built = []
    original = OwnerSerializer.__init__

    def counting(self, *args, **kwargs):
        built.append(kwargs.get("many", False))
        original(self, *args, **kwargs)

    monkeypatch.setattr(OwnerSerializer, "__init__", counting)
    Item.objects.bulk_create([
        Item(id=i, tenant="t1", name=f"item {i}", status="queued", amount=i, created_at=BASE,
             day=BASE.date(), owner_id=1) for i in range(3, 23)])
    response = get("limit=22&expand=owner")
    assert len(response.data["items"]) == 22
    assert all(isinstance(row["owner"], dict) for row in response.data["items"])
    assert len(built) == 1


# Every subset of an item's relations loaded, as an enricher (or the fetch's join) leaves it.
RELATIONS = ("owner", "category", "tags", "comments", "detail")


@pytest.mark.parametrize("loaded", [frozenset(c) for n in range(len(RELATIONS) + 1)
                                    for c in itertools.combinations(RELATIONS, n)])
def test_a_loaded_relation_is_read_as_the_general_route_reads_it_without_a_query(data, loaded):
    from datapipe_django.rest.expand import _is_loaded, _loaded_value

    items = list(Item.objects.order_by("id"))
    if loaded:
        prefetch_related_objects(items, *sorted(loaded))
    fields = ItemSerializer(context={"expand": frozenset(), "auth_type": "private"}).fields
    with CaptureQueriesContext(connection) as queries:
        for item in items:
            for name in RELATIONS:
                ok, value, many = fields[name].loaded_value(item)
                assert ok is _is_loaded(item, name) is (name in loaded)
                if not ok:
                    assert (value, many) == (None, False)
                    continue
                general = _loaded_value(item, name)
                if many:
                    assert value == list(general.all())
                else:
                    assert value == general
    assert len(queries) == 0
