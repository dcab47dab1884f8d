"""Sparse fieldsets: ``?fields=`` / ``?omit=`` through a PipelineViewSet.

The JSON of a sparse request equals the full response restricted (a reference restriction
written here, independently of the library's), on every database engine; the SQL selects only
the columns the response and the pipeline read; unknown names are a 400 that runs no query.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework import serializers
from rest_framework.test import APIRequestFactory

from datapipe_django import Pipeline
from datapipe_django.enrichers import BatchEnricher, PrefetchEnricher
from datapipe_django.fetchers import CachedFetcher, ORMFetcher
from datapipe_django.rest import AuthTypeFieldsMixin, ExpandableField, PipelineViewSet
from tests.conftest import engine_databases
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Category, Comment, Item, Owner
from tests.testapp.serializers import CategorySerializer, CommentSerializer, OwnerSerializer

DB = pytest.mark.django_db(databases=engine_databases(), transaction=False)
BASE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


class LabelSerializer(serializers.Serializer):
    text = serializers.CharField()


class SparseItemSerializer(AuthTypeFieldsMixin, serializers.ModelSerializer):
    owner = ExpandableField(OwnerSerializer)
    category = ExpandableField(CategorySerializer)
    comments = ExpandableField(CommentSerializer, many=True)
    label = ExpandableField(LabelSerializer, id_source="status")

    class Meta:
        model = Item
        fields = ("id", "tenant", "name", "status", "amount", "active", "created_at", "day",
                  "score", "category", "owner", "comments", "label")
        field_auth_types = {"score": {"private"}, "category": {"private"}}


def labels(keys):
    return {key: {"text": key.upper()} for key in keys}


TOP = list(SparseItemSerializer.Meta.fields)
NESTED = {"owner": ["id", "name", "email"], "category": ["id", "name"],
          "comments": ["id", "body", "author"], "label": ["text"]}
EXPANSIONS = ["owner", "category", "comments", "label"]


def pipeline_on(alias: str, *, cached: bool = False) -> Pipeline:
    fetcher: Any = ORMFetcher(alias)
    if cached:
        fetcher = CachedFetcher(fetcher, ttl=60)
    return Pipeline(
        f"sparse-{alias}{'-cached' if cached else ''}", model=Item,
        filterset_class=ItemFilterSet, search_fields=("name",), tenant_field="tenant",
        ordering=("-created_at", "-id"), ordering_fields=("created_at", "amount", "id"),
        fetchers=[fetcher], register=False,
        enrichers=[PrefetchEnricher("owner"),
                   PrefetchEnricher("category", auth_types={"private"}),
                   PrefetchEnricher("comments"), PrefetchEnricher("comments.author"),
                   BatchEnricher("label", key="status", load=labels)],
    )


def view_for(pipeline: Pipeline) -> Any:
    class View(PipelineViewSet):
        serializer_class = SparseItemSerializer

        def get_tenant(self):
            return self.request.headers.get("X-Tenant")

        def get_auth_type(self):
            return self.request.headers.get("X-Auth-Type", "public")

    View.pipeline = pipeline
    return View.as_view({"get": "list"}), View.as_view({"get": "retrieve"})


def seed(alias: str) -> None:
    owners = [Owner(id=1, name="Ann", email="ann@x"), Owner(id=2, name="Bob", email="bob@x")]
    Owner.objects.using(alias).bulk_create(owners)
    Category.objects.using(alias).bulk_create([Category(id=1, name="cat")])
    Item.objects.using(alias).bulk_create([
        Item(id=i, tenant="t1" if i <= 9 else "t2", name=f"item {i}",
             status=["queued", "processed"][i % 2], amount=i * 10, active=i % 3 != 0,
             created_at=BASE + dt.timedelta(hours=i // 2), day=BASE.date(),
             score=i % 4 or None, owner_id=[None, 1, 2][i % 3], category_id=1 if i % 2 else None)
        for i in range(1, 12)
    ])
    Comment.objects.using(alias).bulk_create([
        Comment(id=i, item_id=1 + i % 5, author_id=1 + i % 2, body=f"c{i}") for i in range(1, 8)
    ])


def get(view: Any, params: dict[str, Any], *, auth: str = "public", pk: Any = None) -> Any:
    request = APIRequestFactory().get("/items", params, HTTP_X_TENANT="t1",
                                      HTTP_X_AUTH_TYPE=auth)
    response = view(request, pk=pk) if pk is not None else view(request)
    response.render()
    return response


def restricted(obj: Any, fields: set[str], omit: set[str], prefix: str = "") -> Any:
    """The reference: ``obj`` (a rendered item) as drf-flex-fields restricts it."""
    if isinstance(obj, list):
        return [restricted(o, fields, omit, prefix) for o in obj]
    if not isinstance(obj, dict):
        return obj
    below_f = [f[len(prefix):] for f in fields if f.startswith(prefix) and f != prefix]
    below_o = [o[len(prefix):] for o in omit if o.startswith(prefix)]
    keep = {f.split(".")[0] for f in below_f}
    out = {}
    for key, value in obj.items():
        if keep and key not in keep:
            continue
        if key in below_o:
            continue
        out[key] = restricted(value, fields, omit, f"{prefix}{key}.")
    return out


def paths(auth: str) -> list[str]:
    top = [f for f in TOP if auth == "private" or f not in ("score", "category")]
    nested = [f"{k}.{n}" for k, names in NESTED.items() if k in top for n in names]
    return top + nested + ["comments.author.name", "comments.author.email"]


def selected_columns(sql: str) -> set[str]:
    head = re.search(r"\bSELECT\s+(.*?)\s+FROM\s", sql, re.S | re.I)
    assert head is not None, sql
    return {part.strip().split(".")[-1].strip('"`') for part in head.group(1).split(",")}


@pytest.fixture(params=engine_databases())
def alias(request: pytest.FixtureRequest) -> str:
    return request.param


@DB
def test_the_sql_selects_only_the_columns_the_response_and_the_pipeline_read(alias):
    seed(alias)
    list_view, retrieve_view = view_for(pipeline_on(alias))
    with CaptureQueriesContext(connections[alias]) as queries:
        response = get(list_view, {"fields": "id,name", "limit": 3})
    assert response.status_code == 200, response.data
    assert [set(row) for row in response.data["items"]] == [{"id", "name"}] * 3
    item_queries = [q["sql"] for q in queries.captured_queries if "testapp_item" in q["sql"]]
    # the pk, the ordering key (created_at) and the tenant field are kept: nothing else
    assert [selected_columns(sql) for sql in item_queries] == [
        {"id", "name", "created_at", "tenant"}]
    with CaptureQueriesContext(connections[alias]) as queries:
        response = get(list_view, {"fields": "amount,owner.name,label", "limit": 3,
                                   "expand": "owner,label"})
    assert response.status_code == 200, response.data
    first = next(q["sql"] for q in queries.captured_queries if "testapp_item" in q["sql"])
    # + the owner's key (the enricher and the id) and the batch enricher's key (status)
    assert selected_columns(first) == {"id", "amount", "created_at", "tenant", "owner_id",
                                       "status"}
    with CaptureQueriesContext(connections[alias]) as queries:
        response = get(retrieve_view, {"omit": "name,day,owner"}, pk=1)
    assert response.status_code == 200 and "name" not in response.data
    first = next(q["sql"] for q in queries.captured_queries if "testapp_item" in q["sql"])
    assert {"name", "day", "owner_id"}.isdisjoint(selected_columns(first))
    assert {"amount", "status"} <= selected_columns(first)


@DB
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_sparse_response_is_the_full_response_restricted(alias, data):
    if not Item.objects.using(alias).exists():
        seed(alias)
    list_view, retrieve_view = view_for(pipeline_on(alias))
    auth = data.draw(st.sampled_from(["public", "private"]))
    names = paths(auth)
    fields = data.draw(st.sets(st.sampled_from(names), max_size=4))
    omit = data.draw(st.sets(st.sampled_from(names), max_size=3))
    expand = data.draw(st.sets(st.sampled_from(
        EXPANSIONS + (["comments.author"] if "comments" in EXPANSIONS else [])), max_size=3))
    expand = {e for e in expand if auth == "private" or e != "category"}
    if "comments.author" in expand:
        expand.add("comments")
    params: dict[str, Any] = {"limit": data.draw(st.integers(1, 9)),
                              "ordering": data.draw(st.sampled_from(["amount", "-created_at"]))}
    if expand:
        params["expand"] = ",".join(sorted(expand))
    full = get(list_view, params, auth=auth)
    assert full.status_code == 200, full.data
    sparse_params = dict(params)
    if fields:
        sparse_params["fields"] = ",".join(sorted(fields))
    if omit:
        sparse_params["omit"] = ",".join(sorted(omit))
    with CaptureQueriesContext(connections[alias]) as queries:
        sparse = get(list_view, sparse_params, auth=auth)
    assert sparse.status_code == 200, sparse.data
    assert sparse.data["items"] == restricted(full.data["items"], fields, omit)
    # never a query per row for a deferred column
    assert len(queries.captured_queries) <= 1 + len(expand)
    one = get(retrieve_view, {k: v for k, v in sparse_params.items()
                              if k in ("fields", "omit", "expand")}, auth=auth, pk=3)
    whole = get(retrieve_view, {k: v for k, v in params.items() if k == "expand"},
                auth=auth, pk=3)
    assert one.data == restricted(whole.data, fields, omit)


@DB
@pytest.mark.parametrize("params", [
    {"fields": "id,nope"}, {"omit": "owner.nope"}, {"fields": "name.first"},
    {"fields": "score"}, {"omit": "category.name"},  # hidden from a public caller
    {"fields[]": ["id", "comments.author.secret"]},
])
def test_an_unknown_name_is_a_400_naming_the_parameter_and_queries_nothing(alias, params):
    list_view, _ = view_for(pipeline_on(alias))
    with CaptureQueriesContext(connections[alias]) as queries:
        response = get(list_view, params)
    assert response.status_code == 400
    param = next(iter(params)).rstrip("[]")
    assert list(response.data) == [param]
    assert response.data[param][0].startswith("Unknown field '")
    assert queries.captured_queries == []


@DB
def test_a_hidden_field_reads_exactly_like_an_unknown_one(alias):
    list_view, _ = view_for(pipeline_on(alias))
    hidden = get(list_view, {"fields": "score"}).data["fields"][0]
    unknown = get(list_view, {"fields": "scorx"}).data["fields"][0]
    assert hidden.replace("score", "X") == unknown.replace("scorx", "X")
    seed(alias)
    assert get(list_view, {"fields": "score"}, auth="private").status_code == 200


@DB
def test_a_cached_page_of_some_columns_is_never_served_for_others(alias):
    seed(alias)
    list_view, _ = view_for(pipeline_on(alias, cached=True))
    sparse = get(list_view, {"fields": "id", "limit": 4})
    full = get(list_view, {"limit": 4})
    again = get(list_view, {"fields": "id", "limit": 4})
    assert [set(r) for r in sparse.data["items"]] == [{"id"}] * 4
    assert full.data["items"][0]["name"].startswith("item ")
    assert set(full.data["items"][0]) == set(TOP) - {"score", "category"}
    assert again.data == sparse.data
