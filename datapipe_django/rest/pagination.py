"""`PipelinePagination`: how a ``PipelineViewSet`` list pages, told to DRF.

The pipeline pages itself (limit + offset or an opaque cursor, exact across sources); the view
never calls ``paginate_queryset``. This class describes that paging to the parts of DRF that
ask a view's paginator: the schema generators (the ``limit``/``offset``/``cursor`` parameters
and the response envelope) and the browsable API (the items of a page).
"""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import BasePagination

from datapipe_django.conf import datapipe_settings

__all__ = ["ENVELOPE_ERRORS_SCHEMA", "FACET_SCHEMA", "HIGHLIGHTS_SCHEMA", "PipelinePagination"]

#: The ``errors`` member of an envelope (optional enrichers that failed).
ENVELOPE_ERRORS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "description": "Present only when an optional enricher failed: the items carry no "
                   "expansion for it.",
    "items": {
        "type": "object",
        "required": ["enricher", "code"],
        "properties": {
            "enricher": {"type": "string", "example": "transaction"},
            "code": {"type": "string", "example": "failed",
                     "description": "failed, timeout, deadline_exceeded or dependency_failed "
                                    "(below a failed parent expansion)."},
        },
    },
}


#: What ``highlight=true`` adds to each item.
HIGHLIGHTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"_highlights": {
        "type": "object",
        "description": "Present when the request gives `q` and `highlight=true`: per search "
                       "field that matched, fragments of its text with the matches in `<em>` "
                       "and everything else HTML-escaped.",
        "additionalProperties": {"type": "array", "items": {"type": "string"}},
        "example": {"narration": ["<em>salary</em> for March"]},
    }},
}

#: One facet: values and their counts.
FACET_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"type": "object", "required": ["value", "count"],
              "properties": {"value": {"description": "A value of the field (a foreign key "
                                                      "counts its ids)."},
                             "count": {"type": "integer", "minimum": 1}}},
}


class PipelinePagination(BasePagination):
    """Limit + offset, or limit + cursor, answered with the collection envelope."""

    display_page_controls = False
    #: The pipeline of the view being documented (set by the schema generator), whose search
    #: features (``highlight``, ``facets``) add to the envelope's schema.
    pipeline: Any = None

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> Any:
        raise NotImplementedError(
            "PipelineViewSet pages through its pipeline: run the pipeline (list()) instead of "
            "paginate_queryset()."
        )

    def get_results(self, data: Any) -> Any:
        """The items of a list response (DRF's browsable API asks, to offer its filter form)."""
        return data["items"]

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        limit = getattr(view, "limit_param", "limit")
        offset = getattr(view, "offset_param", "offset")
        cursor = getattr(view, "cursor_param", "cursor")
        return [
            {"name": limit, "required": False, "in": "query",
             "description": "Items per page.",
             "schema": {"type": "integer", "minimum": 1,
                        "maximum": int(datapipe_settings.MAX_LIMIT),
                        "default": int(datapipe_settings.DEFAULT_LIMIT)}},
            {"name": offset, "required": False, "in": "query",
             "description": f"Items to skip. Give `{offset}` or `{cursor}`, not both; a cursor "
                            f"costs the same on every page.",
             "schema": {"type": "integer", "minimum": 0,
                        "maximum": int(datapipe_settings.MAX_OFFSET)}},
            {"name": cursor, "required": False, "in": "query",
             "description": "The `next_cursor` of the previous page (opaque, signed).",
             "schema": {"type": "string"}},
        ]

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        pipeline = self.pipeline
        extra: dict[str, Any] = {}
        if pipeline is not None and pipeline.search_fields and schema.get("items"):
            schema = {**schema, "items": {"allOf": [schema["items"], HIGHLIGHTS_SCHEMA]}}
        if pipeline is not None and pipeline.facet_fields:
            extra["facets"] = {
                "type": "object",
                "description": "Present when the request gives `facets`: per field, its "
                               "values over every row that matches the request (not only this "
                               "page) with how many rows hold each, the most frequent first.",
                "properties": {name: FACET_SCHEMA for name in pipeline.facet_fields},
            }
        return {
            "type": "object",
            "required": ["entity", "count", "has_more", "next_cursor", "items"],
            "properties": {
                # Not an enum: drf-spectacular would hoist an `EntityEnum` component.
                "entity": {"type": "string", "example": "collection",
                           "description": "Always `collection`."},
                "count": {"type": "integer", "description": "Items on this page (not the "
                                                          "total: ask `total=true`).",
                          "example": 10},
                "total": {"type": "integer", "example": 1234,
                          "description": "With `total=true`: every row that matches the "
                                         "request (its filters, not its page), counted "
                                         "exactly. Absent when it cannot be exact."},
                "total_exact": {"type": "boolean",
                                "description": "With `total=true`: whether `total` is given "
                                               "(false: the rows are spread over sources that "
                                               "may overlap, or the counting source was "
                                               "down)."},
                "has_more": {"type": "boolean",
                             "description": "Whether rows follow this page."},
                "next_cursor": {"type": "string", "nullable": True,
                                "description": "Pass it as `cursor` for the next page; set "
                                               "whenever `has_more` is true."},
                "items": schema,
                "errors": ENVELOPE_ERRORS_SCHEMA,
                **extra,
            },
        }
