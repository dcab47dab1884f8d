"""OpenAPI of PipelineViewSet with drf-spectacular, and DRF's browsable API on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django.urls import include, path
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.routers import SimpleRouter

from datapipe_django import Pipeline
from datapipe_django.fetchers import ORMFetcher
from datapipe_django.rest import PipelineViewSet
from tests.testapp.models import Item
from tests.testapp.pipelines import RelatedEnricher
from tests.testapp.serializers import ItemSerializer
from tests.testapp.views import ItemViewSet

ROOT = Path(__file__).resolve().parent.parent


def schema_of(*routes: tuple[str, type]) -> dict:
    router = SimpleRouter(trailing_slash=False)
    for prefix, viewset in routes:
        router.register(prefix, viewset, basename=prefix)
    generator = SchemaGenerator(patterns=[path("v1/", include(router.urls))])
    return generator.get_schema(request=None, public=True)


@pytest.fixture(scope="module")
def schema() -> dict:
    return schema_of(("items", ItemViewSet))


def parameters(operation: dict) -> dict[str, dict]:
    return {p["name"]: p for p in operation["parameters"]}


# -- the list operation --------------------------------------------------------------------------

def test_list_documents_the_filterset_fields(schema):
    params = parameters(schema["paths"]["/v1/items"]["get"])
    assert params["status"]["schema"] == {
        "type": "string", "enum": ["processed", "processing", "queued", "reversed"]}
    assert params["amount__gt"]["schema"]["type"] == "integer"
    assert params["created_at_after"]["schema"] == {"type": "string", "format": "date-time"}
    assert params["amount__in"]["style"] == "form" and params["amount__in"]["explode"] is False
    assert {"name", "owner_name", "score__isnull", "categories"} <= set(params)


def test_list_documents_search_ordering_paging_and_expand(schema):
    params = parameters(schema["paths"]["/v1/items"]["get"])
    assert params["q"]["description"] == "Free text: every word must appear in one of name."
    ordering = params["ordering"]
    assert ordering["schema"]["items"]["enum"] == [
        "amount", "-amount", "created_at", "-created_at", "id", "-id", "name", "-name",
        "score", "-score", "relevance"]
    assert "`relevance` (with `q` only, alone)" in ordering["description"]
    assert ordering["style"] == "form" and ordering["explode"] is False
    assert "default `-created_at,-id`" in ordering["description"]
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100,
                                         "default": 10}
    assert params["offset"]["schema"]["minimum"] == 0
    assert params["cursor"]["schema"] == {"type": "string"}
    expand = params["expand[]"]
    assert expand["schema"] == {"type": "array",
                                "items": {"type": "string", "enum": ["category", "owner"]}}
    assert "Every caller: owner. `private` callers also: category." in expand["description"]


def test_list_documents_highlight_facets_and_their_body(schema):
    operation = schema["paths"]["/v1/items"]["get"]
    params = parameters(operation)
    assert params["highlight"]["schema"] == {"type": "boolean"}
    assert "`<em>`" in params["highlight"]["description"]
    assert params["facets"]["schema"] == {"type": "array", "items": {
        "type": "string", "enum": ["status", "category"]}}
    body = operation["responses"]["200"]["content"]["application/json"]["schema"]
    if "$ref" in body:
        body = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    facets = body["properties"]["facets"]
    assert set(facets["properties"]) == {"status", "category"}
    assert facets["properties"]["status"]["items"]["required"] == ["value", "count"]
    item = body["properties"]["items"]["items"]["allOf"]
    assert item[0] == {"$ref": "#/components/schemas/Item"}
    assert "additionalProperties" in item[1]["properties"]["_highlights"]
    # Retrieve takes none of them.
    retrieve = parameters(schema["paths"]["/v1/items/{id}"]["get"])
    assert not {"highlight", "facets", "ordering"} & set(retrieve)


def test_list_documents_the_envelope_headers_and_errors(schema):
    responses = schema["paths"]["/v1/items"]["get"]["responses"]
    ok = responses["200"]
    assert ok["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PaginatedItemList"}
    assert set(ok["headers"]) == {"X-Datapipe-Source", "X-Datapipe-Unavailable"}
    envelope = schema["components"]["schemas"]["PaginatedItemList"]
    assert envelope["required"] == ["entity", "count", "has_more", "next_cursor", "items"]
    items = envelope["properties"]["items"]  # with _highlights: the pipeline searches
    assert items["type"] == "array"
    assert items["items"]["allOf"][0] == {"$ref": "#/components/schemas/Item"}
    assert envelope["properties"]["next_cursor"]["nullable"] is True
    assert envelope["properties"]["errors"]["items"]["required"] == ["enricher", "code"]
    assert set(responses) == {"200", "400", "403", "503", "504"}
    invalid = responses["400"]["content"]["application/json"]
    assert [s["description"] for s in invalid["schema"]["oneOf"]] == [
        "Each invalid parameter with its messages.",
        "No source can serve this combination of parameters (code `no_fetcher`)."]
    assert responses["503"]["headers"]["Retry-After"]["schema"] == {"type": "integer"}
    assert set(responses["503"]["headers"]) == {"Retry-After", "X-Datapipe-Unavailable"}
    error = schema["components"]["schemas"]["DatapipeError"]
    assert sorted(error["required"]) == ["code", "detail"]
    assert error["properties"]["code"]["description"] == (
        "What went wrong, for a program: `no_fetcher`, `enrichment_failed`, "
        "`sources_unavailable`, `deadline_exceeded`.")
    # No enum component of ours could collide with a project's own.
    assert not [name for name in schema["components"]["schemas"]
                if name in ("CodeEnum", "EntityEnum")]


def test_expandable_fields_are_an_id_or_the_object(schema):
    owner = schema["components"]["schemas"]["Item"]["properties"]["owner"]
    assert owner["oneOf"] == [{"type": "integer"}, {"$ref": "#/components/schemas/Owner"}]
    assert owner["readOnly"] is True


# -- the retrieve operation ----------------------------------------------------------------------

def test_retrieve_documents_expand_404_and_no_list_parameters(schema):
    operation = schema["paths"]["/v1/items/{id}"]["get"]
    params = parameters(operation)
    assert {"expand[]", "id"} <= set(params)
    assert not {"q", "ordering", "limit", "offset", "cursor", "status"} & set(params)
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Item"}
    assert set(operation["responses"]) == {"200", "400", "403", "404", "503", "504"}
    assert "X-Datapipe-Errors" in operation["responses"]["200"]["headers"]
    invalid = operation["responses"]["400"]["content"]["application/json"]["schema"]
    assert invalid["description"] == "Each invalid parameter with its messages."


def test_a_nullable_relation_is_documented_as_nullable(schema):
    """The schema tells the truth: an item without a category renders `"category": null`."""
    properties = schema["components"]["schemas"]["Item"]["properties"]
    assert properties["category"]["nullable"] is True
    assert properties["owner"]["nullable"] is True  # both foreign keys are null=True
    assert all(p.get("allowEmptyValue") is True
               for p in schema["paths"]["/v1/items"]["get"]["parameters"] if p["in"] == "query")


@pytest.mark.parametrize(("auth_type", "enum"), [("public", ["owner"]),
                                                 ("private", ["category", "owner"])])
def test_the_schema_a_caller_reads_offers_only_the_expansions_it_may_ask_for(auth_type, enum):
    from drf_spectacular.views import SpectacularAPIView
    from rest_framework.test import APIRequestFactory

    router = SimpleRouter(trailing_slash=False)
    router.register("items", ItemViewSet, basename="items")
    view = SpectacularAPIView.as_view(patterns=[path("v1/", include(router.urls))])
    request = APIRequestFactory().get("/schema/", {"format": "json"}, HTTP_HOST="127.0.0.1",
                                      HTTP_X_AUTH_TYPE=auth_type)
    response = view(request)
    response.render()
    document = json.loads(response.content)
    for operation in (document["paths"]["/v1/items"]["get"],
                      document["paths"]["/v1/items/{id}"]["get"]):
        assert parameters(operation)["expand[]"]["schema"]["items"]["enum"] == enum


# -- what a pipeline declares changes what is documented ----------------------------------------

class Required(RelatedEnricher):
    pass


plain = Pipeline("schema-plain", model=Item, fetchers=[ORMFetcher("default")], timeout=None,
                 enrichers=[Required("owner", required=True)], register=False)


class PlainViewSet(PipelineViewSet):
    pipeline = plain
    serializer_class = ItemSerializer


class Summary(serializers.Serializer):
    total = serializers.IntegerField()


@extend_schema_view(
    list=extend_schema(responses={200: Summary}, parameters=[
        OpenApiParameter("q", str, description="Our own words.")]),
)
class AnnotatedViewSet(ItemViewSet):
    pass


def test_no_tenant_search_or_deadline_means_no_403_q_or_504_but_a_required_enricher_502():
    schema = schema_of(("plain", PlainViewSet))
    operation = schema["paths"]["/v1/plain"]["get"]
    assert "q" not in parameters(operation)
    assert set(operation["responses"]) == {"200", "400", "502", "503"}


def test_extend_schema_on_a_subclass_still_wins():
    schema = schema_of(("annotated", AnnotatedViewSet))
    operation = schema["paths"]["/v1/annotated"]["get"]
    assert parameters(operation)["q"]["description"] == "Our own words."
    assert "ordering" in parameters(operation)  # ours are still there
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/PaginatedSummaryList"}
    assert {"400", "503"} <= set(operation["responses"])


# -- the whole schema is valid OpenAPI, here and in the example project ---------------------------

def test_the_schema_validates_without_warnings(tmp_path):
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target),
                 stdout=StringIO(), stderr=StringIO())
    document = yaml.safe_load(target.read_text())
    assert "/v1/items" in document["paths"]


def test_the_example_project_serves_a_valid_schema(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "example_project.settings",
           "DATAPIPE_EXAMPLE_DB": ""}
    target = tmp_path / "schema.json"
    subprocess.run([sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn",
                    "--format", "openapi-json", "--file", str(target)],
                   cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    document = json.loads(target.read_text())
    operation = document["paths"]["/v1/payouts"]["get"]
    names = {p["name"] for p in operation["parameters"]}
    assert {"status", "created_at_after", "q", "ordering", "limit", "cursor", "expand[]",
            "fields", "omit"} <= names
    for route in ("/v1/payouts", "/v1/payouts/{id}"):
        headers = {p["name"]: p for p in document["paths"][route]["get"]["parameters"]
                   if p["in"] == "header"}
        assert headers["X-Merchant-Id"]["schema"] == {"type": "integer", "minimum": 1}
        assert headers["X-Auth-Type"]["schema"]["enum"] == ["private", "public"]


# -- DRF's browsable API -------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_browsable_api_renders_a_list_with_its_filter_form(client):
    Item.objects.create(id=1, tenant="t1", name="alpha", status="queued", amount=5,
                        created_at="2026-01-01T00:00:00Z", day="2026-01-01")
    response = client.get("/v1/items?limit=1", HTTP_ACCEPT="text/html", HTTP_X_TENANT="t1")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert response["X-Datapipe-Source"] == "default"
    html = response.content.decode()
    assert "&quot;entity&quot;: &quot;collection&quot;" in html
    assert "alpha" in html
    assert 'name="status"' in html  # the FilterSet's form, under "Filters"
    detail = client.get("/v1/items/1", HTTP_ACCEPT="text/html", HTTP_X_TENANT="t1")
    assert detail.status_code == 200 and "alpha" in detail.content.decode()
