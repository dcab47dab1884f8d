"""OpenAPI for ``PipelineViewSet`` with drf-spectacular.

Imported by ``DatapipeConfig.ready()`` when ``drf_spectacular`` is in ``INSTALLED_APPS`` (the
extensions register themselves); nothing to configure. With it, every ``PipelineViewSet``
documents:

* the FilterSet's fields (drf-spectacular's django-filter support, through
  :class:`~datapipe_django.rest.filters.PipelineFilterBackend`);
* ``limit``, ``offset`` and ``cursor`` and the collection envelope (through
  :class:`~datapipe_django.rest.pagination.PipelinePagination`);
* ``q`` (with the searched fields), ``ordering`` (the allowed values, ``relevance`` with a
  search), ``highlight`` and ``facets`` (the pipeline's ``facet_fields``), ``expand[]`` (every
  path, and which auth types may ask for which), on list and retrieve; the envelope's
  ``facets`` and each item's ``_highlights``;
* the error bodies: 400 (``{param: [messages]}``, or ``{"detail", "code"}`` when no source
  can serve), 403 without a tenant, 404 on retrieve, 502, 503 (with ``Retry-After``) and 504;
* the ``X-Datapipe-Source`` and ``X-Datapipe-Unavailable`` response headers;
* :class:`~datapipe_django.rest.ExpandableField` as "the id, or the nested object".

Your own ``@extend_schema`` on a subclass's ``list``/``retrieve`` still applies and wins where
it says something (its responses, its parameters of the same name).
"""

from __future__ import annotations

import functools
from typing import Any

from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import models
from drf_spectacular.extensions import OpenApiSerializerFieldExtension, OpenApiViewExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_array_type, build_basic_type, get_class
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from datapipe_django.conf import datapipe_settings
from datapipe_django.errors import (
    DeadlineExceeded,
    EnrichmentFailed,
    NoFetcher,
    SourcesUnavailable,
)
from datapipe_django.paging import RELEVANCE
from datapipe_django.rest.filters import caller_auth_type
from datapipe_django.rest.pagination import PipelinePagination
from datapipe_django.rest.viewsets import SOURCE_HEADER, UNAVAILABLE_HEADER

__all__ = [
    "DatapipeErrorSerializer",
    "ExpandableFieldExtension",
    "PipelineSchemaMixin",
    "PipelineViewSetExtension",
]

ERROR_CODES = [NoFetcher.default_code, EnrichmentFailed.default_code,
               SourcesUnavailable.default_code, DeadlineExceeded.default_code]


class DatapipeErrorSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """The body of a pipeline error that is not about a parameter."""

    detail = serializers.CharField(help_text="What went wrong, for a human.")
    # Not a ChoiceField: drf-spectacular would hoist a `CodeEnum` component that may collide
    # with the project's own enums.
    code = serializers.CharField(help_text="What went wrong, for a program: "
                                           + ", ".join(f"`{c}`" for c in ERROR_CODES) + ".")


class ErrorDetailSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """DRF's own error body (403, 404)."""

    detail = serializers.CharField()


_VALIDATION_ERROR: dict[str, Any] = {
    "type": "object",
    "description": "Each invalid parameter with its messages.",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}
_NO_FETCHER: dict[str, Any] = {
    "type": "object",
    "description": "No source can serve this combination of parameters (code `no_fetcher`).",
    "required": ["detail", "code"],
    "properties": {"detail": {"type": "string"},
                   "code": {"type": "string", "example": NoFetcher.default_code}},
}


def _id_schema(model: Any) -> dict[str, Any]:
    pk = model._meta.pk if model is not None else None
    while pk is not None and pk.is_relation:
        pk = pk.target_field
    if isinstance(pk, models.UUIDField):
        return build_basic_type(OpenApiTypes.UUID)  # type: ignore[return-value]
    if isinstance(pk, models.IntegerField | models.AutoField):
        return build_basic_type(OpenApiTypes.INT)  # type: ignore[return-value]
    return build_basic_type(OpenApiTypes.STR)  # type: ignore[return-value]


def _model_field(model: Any, name: str | None) -> Any:
    try:
        return model._meta.get_field(name)
    except FieldDoesNotExist:
        return None


def _relation_facts(field: Any) -> tuple[Any, bool, bool]:
    """``(related model or None, many, nullable)`` of an ``ExpandableField`` on its
    serializer's model: nullable when there may be no related row, so no id (a nullable
    foreign key or id column)."""
    model = getattr(getattr(field.parent, "Meta", None), "model", None)
    many = bool(field.many)
    if model is None:
        return None, many, False
    relation = _model_field(model, field.source)
    related = None
    if relation is not None and relation.is_relation:
        related = relation.related_model
        many = many or bool(relation.many_to_many or relation.one_to_many)
    holder = _model_field(model, field.id_source) if field.id_source else relation
    nullable = bool(holder is not None and getattr(holder, "null", False)) and not many
    return related, many, nullable


class ExpandableFieldExtension(OpenApiSerializerFieldExtension):
    """``ExpandableField``: the related id, or the nested object when it was expanded."""

    target_class = "datapipe_django.rest.expand.ExpandableField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema: AutoSchema, direction: Any) -> Any:
        field = self.target
        nested = auto_schema.resolve_serializer(field.serializer_class, direction)
        related, many, nullable = _relation_facts(field)
        id_schema = _id_schema(related)
        ref: dict[str, Any] = (nested.ref if nested else None) or dict(
            build_basic_type(OpenApiTypes.OBJECT) or {})
        if many:
            id_schema, ref = build_array_type(id_schema), build_array_type(ref)
        schema: dict[str, Any] = {
            "oneOf": [id_schema, ref],
            "description": f"The id, or the object when the request expands "
                           f"`{field.field_name}` (see `expand[]`)"
                           + ("; null when there is none." if nullable else "."),
            "readOnly": True,
        }
        if nullable:
            schema["nullable"] = True
        return schema


def _caller_expand_parameter(pipeline: Any, caller: str) -> OpenApiParameter | None:
    """The ``expand[]`` of one caller's schema: only the paths it may ask for (any other is a
    400); None when it may ask for none."""
    mine = pipeline.expandable(caller)
    if not mine:
        return None
    depth = int(datapipe_settings.MAX_EXPAND_DEPTH)
    return OpenApiParameter(
        "expand[]", {"type": "array", "items": {"type": "string", "enum": sorted(mine)}},
        style="form", explode=True,
        description="Related objects to include, by path: `expand[]=a&expand[]=b.c`, "
                    f"or `expand=a,b.c`; at most {depth} levels. For this caller "
                    f"(`{caller}`): {', '.join(sorted(mine))}. Any other path is a "
                    f"400.")


def _expansions_by_auth_type(pipeline: Any) -> tuple[set[str], list[str]]:
    """Every path some caller may expand, and one line per auth type saying which (the paths
    every caller may expand first)."""
    auth_types = sorted({t for e in pipeline.enrichers
                         for t in (e.auth_types or ())})
    everyone = pipeline.expandable(None)
    every_path = set(everyone)
    lines = []
    if everyone:
        lines.append(f"Every caller: {', '.join(sorted(everyone))}.")
    for auth_type in auth_types:
        more = pipeline.expandable(auth_type) - everyone
        every_path |= more
        if more:
            lines.append(f"`{auth_type}` callers also: {', '.join(sorted(more))}.")
    return every_path, lines


class PipelineSchemaMixin:
    """What a pipeline adds to drf-spectacular's ``AutoSchema`` of a ``PipelineViewSet``."""

    view: Any

    def _pipeline(self) -> Any:
        try:
            return self.view.get_pipeline()
        except ImproperlyConfigured:
            return None

    def get_operation(self, *args: Any, **kwargs: Any) -> Any:
        operation = super().get_operation(*args, **kwargs)  # type: ignore[misc]
        if operation and self._pipeline() is not None:
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query":
                    # An empty parameter is an absent one (``?cursor=``).
                    parameter["allowEmptyValue"] = True
        return operation

    def get_override_parameters(self) -> list[Any]:
        parameters = list(super().get_override_parameters())  # type: ignore[misc]
        pipeline = self._pipeline()
        if pipeline is None:
            return parameters
        given = {p.name for p in parameters if isinstance(p, OpenApiParameter)}
        ours: list[OpenApiParameter] = []
        action = getattr(self.view, "action", None)
        if action == "list":
            ours += self._list_parameters(pipeline)
        expand = self._expand_parameter(pipeline)
        if expand is not None:
            ours.append(expand)
        ours += self._fieldset_parameters()
        ours += [
            OpenApiParameter(SOURCE_HEADER, str, OpenApiParameter.HEADER, response=[200],
                             description="The source(s) that served the response, "
                                         "comma-separated (e.g. `appdb,archive`)."),
            OpenApiParameter(UNAVAILABLE_HEADER, str, OpenApiParameter.HEADER,
                             response=[200, 503],
                             description="Sources that could not answer (down, timing out): "
                                         "on a 200 the page may lack rows only they hold."),
            OpenApiParameter("Retry-After", int, OpenApiParameter.HEADER, response=[503],
                             description="Seconds to wait before retrying."),
        ]
        if action == "retrieve" and pipeline.enrichers:
            ours.append(OpenApiParameter(
                "X-Datapipe-Errors", str, OpenApiParameter.HEADER, response=[200],
                description="Optional enrichers that failed (their expansion is missing)."))
        return parameters + [p for p in ours if p.name not in given]

    def _list_parameters(self, pipeline: Any) -> list[OpenApiParameter]:
        view = self.view
        ours = []
        if pipeline.search_fields:
            ours.append(OpenApiParameter(
                getattr(view, "search_param", "q"), str,
                description="Free text: every word must appear in one of "
                            f"{', '.join(pipeline.search_fields)}."))
        ours.append(OpenApiParameter(
            getattr(view, "total_param", "total"), bool,
            description="Count every matching row too: `total` in the body (exact), or "
                        "`total_exact: false` when no single source holds every row."
                        + (" Default: true." if pipeline.total else "")))
        ours.append(self._ordering_parameter(pipeline))
        if pipeline.search_fields:
            ours.append(OpenApiParameter(
                getattr(view, "highlight_param", "highlight"), bool,
                description="With `q`: add to each item `_highlights`, per search field the "
                            "fragments that match, the matches in `<em>` and the rest "
                            "HTML-escaped."))
        if pipeline.facet_fields:
            ours.append(self._facets_parameter(pipeline))
        return ours

    def _ordering_parameter(self, pipeline: Any) -> OpenApiParameter:
        fields = sorted(pipeline.ordering_fields - {"pk"})
        default = ",".join(("-" if f.descending else "") + f.name
                           for f in pipeline.default_ordering.fields)
        values = [v for f in fields for v in (f, f"-{f}")]
        ranked = ""
        if pipeline.search_fields and RELEVANCE not in pipeline.ordering_fields:
            values.append(RELEVANCE)
            ranked = (f" `{RELEVANCE}` (with `q` only, alone): best match first, by the "
                      f"serving source's score, the primary key breaking ties"
                      + ("; the default when `q` is given." if pipeline.search_ordering ==
                         RELEVANCE else "."))
        return OpenApiParameter(
            getattr(self.view, "ordering_param", "ordering"),
            {"type": "array", "items": {"type": "string", "enum": values}},
            style="form", explode=False,
            description=f"Comma-separated fields, `-` for descending (default `{default}`). "
                        f"The primary key always breaks ties.{ranked}")

    def _facets_parameter(self, pipeline: Any) -> OpenApiParameter:
        return OpenApiParameter(
            getattr(self.view, "facets_param", "facets"),
            {"type": "array", "items": {"type": "string", "enum": list(pipeline.facet_fields)}},
            style="form", explode=False,
            description="Comma-separated fields to count: the body's `facets` gives, per "
                        "field, the values of every row matching the request (not only "
                        f"the page) and how many rows hold each, at most "
                        f"{pipeline.facet_size} values, the most frequent first.")

    def _get_paginator(self) -> Any:
        paginator = super()._get_paginator()  # type: ignore[misc]
        if isinstance(paginator, PipelinePagination):
            paginator.pipeline = self._pipeline()  # documents the body's search additions
        return paginator

    def _fieldset_parameters(self) -> list[OpenApiParameter]:
        view = self.view
        names = ", ".join(f"`{name}`" for name in self._top_level_fields()) or "its fields"
        text = ("Comma-separated field paths, dots for nested objects (`user.name`). The "
                f"response's fields: {names}. An unknown name is a 400.")
        array = {"type": "array", "items": {"type": "string"}}
        return [
            OpenApiParameter(getattr(view, "fields_param", "fields"), array, style="form",
                             explode=False,
                             description="Render only these fields (sparse fieldset). " + text),
            OpenApiParameter(getattr(view, "omit_param", "omit"), array, style="form",
                             explode=False,
                             description="Render every field but these. " + text),
        ]

    def _top_level_fields(self) -> list[str]:
        """The serializer's fields as the schema's caller sees them (its auth type)."""
        serializer = self.view.get_serializer_class()(
            context={"auth_type": caller_auth_type(self.view)})
        return list(serializer.fields)

    def _caller_auth_type(self) -> tuple[bool, str | None]:
        """``(True, auth type)`` of the caller the schema is generated for (drf-spectacular
        gives the view the schema request's headers), ``(False, None)`` without one."""
        request = getattr(self.view, "request", None)
        # Offline (``manage.py spectacular``) the mock request has no Host: no caller.
        if request is None or not request.META.get("HTTP_HOST"):
            return False, None
        try:
            return True, self.view.get_auth_type()
        except Exception:
            return False, None

    def _expand_parameter(self, pipeline: Any) -> OpenApiParameter | None:
        if not pipeline.enrichers:
            return None
        known, caller = self._caller_auth_type()
        if known and caller is not None:
            return _caller_expand_parameter(pipeline, caller)
        every_path, lines = _expansions_by_auth_type(pipeline)
        if not every_path:
            return None
        depth = int(datapipe_settings.MAX_EXPAND_DEPTH)
        return OpenApiParameter(
            "expand[]", {"type": "array",
                         "items": {"type": "string", "enum": sorted(every_path)}},
            style="form", explode=True,
            description="Related objects to include, by path: `expand[]=a&expand[]=b.c`, or "
                        f"`expand=a,b.c`; at most {depth} levels. " + " ".join(lines)
                        + " Any other path is a 400.")

    def get_response_serializers(self) -> Any:
        base = super().get_response_serializers()  # type: ignore[misc]
        responses = dict(base) if isinstance(base, dict) else {200: base}
        pipeline = self._pipeline()
        if pipeline is None:
            return responses
        errors = self._error_responses(pipeline, getattr(self.view, "action", None))
        given = {str(code) for code in responses}
        responses.update({code: r for code, r in errors.items() if str(code) not in given})
        return responses

    def _error_responses(self, pipeline: Any, action: str | None) -> dict[int, Any]:
        errors: dict[int, Any] = {}
        if action == "list":
            errors[400] = OpenApiResponse(
                {"oneOf": [_VALIDATION_ERROR, _NO_FETCHER]},
                description="Invalid parameters (each named), or no source can serve them.",
                examples=[OpenApiExample(
                    "Invalid parameters", status_codes=["400"], response_only=True,
                    value={"limit": ["Ensure this value is less than or equal to 100."]})])
        elif action == "retrieve":
            errors[400] = OpenApiResponse(
                _VALIDATION_ERROR,
                description="Invalid parameters, each named: an unknown expansion, a parameter "
                            "a retrieve does not take, a tenant the credentials cannot hold.",
                examples=[OpenApiExample(
                    "Invalid expansion", status_codes=["400"], response_only=True,
                    value={"expand": ["Unknown expansion 'nope'."]})])
        if pipeline.tenant_field:
            errors[403] = OpenApiResponse(ErrorDetailSerializer,
                                          description="No tenant for these credentials.")
        if action == "retrieve":
            errors[404] = OpenApiResponse(ErrorDetailSerializer,
                                          description="No source has this id for the caller.")
        if pipeline.fail_fast or any(e.required for e in pipeline.enrichers):
            errors[502] = OpenApiResponse(DatapipeErrorSerializer,
                                          description="A required enrichment failed.")
        errors[503] = OpenApiResponse(DatapipeErrorSerializer,
                                      description="Every source that could serve is "
                                                  "unavailable; retry after `Retry-After`.")
        if pipeline.timeout is not None:
            errors[504] = OpenApiResponse(DatapipeErrorSerializer,
                                          description="The request took longer than its "
                                                      "deadline.")
        return errors


def _with_mixin(schema_class: type) -> type:
    return type(f"Pipeline{schema_class.__name__}", (PipelineSchemaMixin, schema_class), {})


class PipelineViewSetExtension(OpenApiViewExtension):
    """Gives every ``PipelineViewSet`` (subclasses included) :class:`PipelineSchemaMixin`."""

    target_class = "datapipe_django.rest.viewsets.PipelineViewSet"
    match_subclasses = True

    def view_replacement(self) -> type:
        target = self.target
        base = get_class(target.schema)
        if not (isinstance(base, type) and issubclass(base, AutoSchema)):
            return target  # not drf-spectacular's schema: leave the view as it is
        attrs: dict[str, Any] = {"schema": _with_mixin(base)(), "__module__": target.__module__}
        for action in ("list", "retrieve"):
            method = getattr(target, action)
            action_schema = getattr(method, "kwargs", {}).get("schema")
            if action_schema is None:
                continue
            # @extend_schema on the action: keep it, with the mixin underneath it.

            @functools.wraps(method)
            def wrapper(self: Any, *args: Any, __method: Any = method, **kwargs: Any) -> Any:
                return __method(self, *args, **kwargs)  # pragma: no cover (schema only)

            wrapper.kwargs = {**method.kwargs,  # type: ignore[attr-defined]
                              "schema": _with_mixin(get_class(action_schema))}
            attrs[action] = wrapper
        return type(target.__name__, (target,), attrs)
