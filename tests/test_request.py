"""``datapipe_django.request``: the one translation of a query string into a PipelineRequest,
which the viewset and ``manage.py datapipe explain`` both use."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.http import QueryDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from datapipe_django import PipelineRequest, ValidationFailed
from datapipe_django.request import QUERY_PARAMETERS, query_parameters, request_from_query
from tests.testapp.views import ItemViewSet

NAMES = ["q", "ordering", "limit", "offset", "cursor", "expand", "expand[]", "total",
         "highlight", "facets", "status", "amount_min", "format"]
VALUES = st.sampled_from(["", "1", "yes", "maybe", "owner", "a,b", " -amount ,id", "x\x0b"])


def view_request(query: str, pk: object = None) -> PipelineRequest:
    """The request ``ItemViewSet`` builds from ``query`` (no fields/omit: no serializer)."""
    view = ItemViewSet()
    view.request = Request(APIRequestFactory().get(f"/?{query}", HTTP_X_TENANT="t1"))
    view.format_kwarg = None
    return view.get_pipeline_request(pk=pk)


def translated(query: str, pk: object = None) -> PipelineRequest:
    return request_from_query(QueryDict(query), query_parameters(ignored=["format"]), pk=pk,
                              tenant="t1", auth_type="public")


def outcome(build, query: str, pk: object = None):
    try:
        return build(query, pk).replace(context={})
    except ValidationFailed as exc:
        return exc.errors


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=6),
       st.sampled_from([None, "3"]))
def test_the_viewset_and_the_translation_agree_on_every_query(pairs, pk):
    query = urlencode(pairs)
    assert outcome(view_request, query, pk) == outcome(translated, query, pk)


def test_a_list_query_becomes_the_request_fields():
    request = request_from_query(QueryDict(
        "q=+invoice+&ordering=-amount,id&limit=5&offset=10&expand[]=owner&expand=tags,&"
        "total=yes&highlight=true&facets=status,mode&status=queued&status=processed"))
    assert request.search == "invoice" and request.ordering == ("-amount", "id")
    assert (request.limit, request.offset, request.cursor) == ("5", "10", None)
    assert request.expand == {"owner", "tags"} and request.total is True
    assert request.highlight == "true" and request.facets == ("status", "mode")
    assert request.filters.getlist("status") == ["queued", "processed"]
    assert set(request.filters) == {"status"} and request.pk is None


def test_a_retrieve_takes_expand_fields_and_omit_only():
    request = request_from_query(QueryDict("expand=owner&fields=id"), pk="7", tenant="t1")
    assert (request.pk, request.tenant, request.expand, request.fields) == \
        ("7", "t1", {"owner"}, {"id"})
    assert request.filters == {}
    with pytest.raises(ValidationFailed) as caught:
        request_from_query(QueryDict("expand=owner&limit=3&status=x"), pk="7")
    assert caught.value.errors == {"limit": ["A retrieve does not take this parameter."],
                                   "status": ["A retrieve does not take this parameter."]}
    assert request_from_query(QueryDict("limit=3&status=x"), pk="7", ignore_unknown=True).pk == "7"


@pytest.mark.parametrize(("query", "errors"), [
    ("limit=1&limit=2", {"limit": ["Give this parameter once."]}),
    ("total=maybe", {"total": ["Must be a valid boolean."]}),
    ("total=maybe&q=a&q=b", {"total": ["Must be a valid boolean."],
                             "q": ["Give this parameter once."]}),
])
def test_a_bad_reserved_parameter_is_refused_by_its_name(query, errors):
    with pytest.raises(ValidationFailed) as caught:
        request_from_query(QueryDict(query))
    assert caught.value.errors == errors


def test_renamed_parameters_are_read_by_their_new_name():
    parameters = query_parameters({"search_param": "search", "fields_param": "only"})
    assert parameters["search"] is QUERY_PARAMETERS["q"] and "q" not in parameters
    assert parameters["only[]"] is QUERY_PARAMETERS["fields[]"]
    request = request_from_query(QueryDict("search=abc&q=zzz&only[]=id"), parameters)
    assert request.search == "abc" and request.fields == {"id"}
    assert request.filters.getlist("q") == ["zzz"]  # no longer reserved: the FilterSet's
