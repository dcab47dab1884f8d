"""``datapipe_django.rest.pagination``: ``PipelinePagination`` tells DRF how a pipeline list
pages (the parameters and the envelope of the OpenAPI schema, the items for the browsable
API) and refuses to page a queryset itself."""

from __future__ import annotations

import pytest
from django.test import override_settings

from datapipe_django import Pipeline
from datapipe_django.rest.pagination import FACET_SCHEMA, HIGHLIGHTS_SCHEMA, PipelinePagination
from datapipe_django.test import InMemoryFetcher
from tests.testapp.models import Item


class View:
    limit_param, offset_param, cursor_param = "size", "skip", "after"


def test_it_never_pages_a_queryset() -> None:
    with pytest.raises(NotImplementedError, match="run the pipeline"):
        PipelinePagination().paginate_queryset(Item.objects.none(), request=None)


def test_the_items_of_a_page_are_the_envelopes() -> None:
    assert PipelinePagination().get_results({"entity": "collection", "items": [1, 2]}) == [1, 2]


def test_the_parameters_follow_the_views_names_and_the_limits() -> None:
    with override_settings(DATAPIPE={"MAX_LIMIT": 50, "DEFAULT_LIMIT": 5, "MAX_OFFSET": 900}):
        size, skip, after = PipelinePagination().get_schema_operation_parameters(View())
    assert (size["name"], skip["name"], after["name"]) == ("size", "skip", "after")
    assert size["schema"] == {"type": "integer", "minimum": 1, "maximum": 50, "default": 5}
    assert skip["schema"] == {"type": "integer", "minimum": 0, "maximum": 900}
    assert "`skip` or `after`, not both" in skip["description"]
    names = [p["name"] for p in PipelinePagination().get_schema_operation_parameters(object())]
    assert names == ["limit", "offset", "cursor"]


def test_the_envelope_schema_adds_what_the_pipeline_can_add() -> None:
    item = {"type": "object"}
    plain = PipelinePagination().get_paginated_response_schema(item)
    assert plain["required"] == ["entity", "count", "has_more", "next_cursor", "items"]
    assert plain["properties"]["items"] == item
    assert "facets" not in plain["properties"]
    paginator = PipelinePagination()
    paginator.pipeline = Pipeline("pagination-search", model=Item, fetchers=[InMemoryFetcher()],
                                  search_fields=("name",), facet_fields=("status",),
                                  register=False)
    searched = paginator.get_paginated_response_schema({"items": item})
    assert searched["properties"]["items"]["items"] == {"allOf": [item, HIGHLIGHTS_SCHEMA]}
    assert searched["properties"]["facets"]["properties"] == {"status": FACET_SCHEMA}
