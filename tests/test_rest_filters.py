"""The browsable API's filter form (search, ordering, limit, the FilterSet's fields) and the
caller's view of the FilterSet: filters over fields hidden from its auth type are neither in
its form nor in its schema, and are refused like unknown parameters."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import include, path
from drf_spectacular.generators import SchemaGenerator
from rest_framework.routers import SimpleRouter
from rest_framework.test import APIRequestFactory

from tests.test_rest_sparse import pipeline_on, seed, view_for

pytestmark = pytest.mark.django_db

#: ``SparseItemSerializer.Meta.field_auth_types`` hides score and category from public callers.
HIDDEN = {"score", "score__isnull", "score_not", "category", "categories"}


def page(params: dict, auth: str) -> tuple[int, str]:
    list_view, _ = view_for(pipeline_on("default"))
    request = APIRequestFactory().get("/items", params, HTTP_X_TENANT="t1",
                                      HTTP_X_AUTH_TYPE=auth, HTTP_ACCEPT="text/html")
    response = list_view(request)
    response.render()
    return response.status_code, response.content.decode()


def form_names(html: str) -> set[str]:
    return set(re.findall(r'<(?:input|select)[^>]*\bname="([^"]+)"', html))


def test_the_form_offers_search_ordering_limit_and_the_filters():
    seed("default")
    status, html = page({"limit": 2, "ordering": "-amount", "q": "item"}, "private")
    assert status == 200
    names = form_names(html)
    assert {"q", "ordering", "limit", "status", "amount__gte", "created_at_after"} <= names
    assert names >= HIDDEN
    ordering = re.search(r'<select name="ordering".*?</select>', html, re.S).group(0)
    values = re.findall(r'<option value="([^"]*)"', ordering)
    assert values == ["", "amount", "-amount", "created_at", "-created_at", "id", "-id"]
    assert re.search(r'<option value="-amount"\s+selected>', ordering)  # the current value
    assert re.search(r'name="limit"[^>]*max="100"', html)


def test_a_public_callers_form_has_no_filter_over_a_field_hidden_from_it():
    seed("default")
    status, html = page({}, "public")
    assert status == 200
    names = form_names(html)
    assert {"q", "ordering", "limit", "status", "owner_name"} <= names
    assert names.isdisjoint(HIDDEN)


@pytest.mark.parametrize("params", [{"score": "1"}, {"score__isnull": "true"},
                                    {"categories": "1"}, {"category": "1", "status": "queued"}])
def test_a_hidden_filter_is_refused_like_an_unknown_parameter(params):
    seed("default")
    list_view, _ = view_for(pipeline_on("default"))
    hidden = sorted(set(params) & HIDDEN)
    with CaptureQueriesContext(connection) as queries:
        response = list_view(APIRequestFactory().get("/items", params, HTTP_X_TENANT="t1"))
    assert response.status_code == 400
    assert response.data == {name: ["Unknown parameter."] for name in hidden}
    assert queries.captured_queries == []
    private = list_view(APIRequestFactory().get("/items", params, HTTP_X_TENANT="t1",
                                                HTTP_X_AUTH_TYPE="private"))
    assert private.status_code == 200


def test_each_callers_schema_lists_only_the_filters_it_may_use():
    list_view, _ = view_for(pipeline_on("default"))
    router = SimpleRouter(trailing_slash=False)
    router.register("items", list_view.cls, basename="items")
    generator = SchemaGenerator(patterns=[path("v1/", include(router.urls))])

    def names(auth: str) -> set[str]:
        request = APIRequestFactory().get("/schema/", HTTP_X_AUTH_TYPE=auth)
        from rest_framework.request import Request

        schema = generator.get_schema(request=Request(request), public=True)
        return {p["name"] for p in schema["paths"]["/v1/items"]["get"]["parameters"]}

    public, private = names("public"), names("private")
    assert {"status", "owner_name", "q", "ordering", "limit", "fields"} <= public
    assert public.isdisjoint(HIDDEN)
    assert private >= HIDDEN


def test_no_message_suggests_a_filter_hidden_from_the_caller():
    """An unknown-parameter message may suggest a close name; never a hidden filter's."""
    from datapipe_django.errors import ValidationFailed

    def unknown(request):
        raise ValidationFailed({"scor": ["Unknown parameter. Did you mean 'score'?"],
                                "stauts": ["Unknown parameter. Did you mean 'status'?"]})

    p = pipeline_on("default")
    p.validators.append(unknown)
    list_view, _ = view_for(p)
    public = list_view(APIRequestFactory().get("/items", {}, HTTP_X_TENANT="t1"))
    assert public.status_code == 400
    assert public.data == {"scor": ["Unknown parameter."],
                           "stauts": ["Unknown parameter. Did you mean 'status'?"]}
    private = list_view(APIRequestFactory().get("/items", {}, HTTP_X_TENANT="t1",
                                                HTTP_X_AUTH_TYPE="private"))
    assert private.data["scor"] == ["Unknown parameter. Did you mean 'score'?"]
