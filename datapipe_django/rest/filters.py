"""`PipelineFilterBackend`: the pipeline's FilterSet (and ``q``, ``ordering``, ``limit``), shown
to DRF.

A ``PipelineViewSet`` never filters a queryset (every source applies the FilterSet, compiled
to a specification). This backend tells DRF which FilterSet that is, through DRF's own
filter-backend hooks: ``to_html`` renders the browsable API's filter form (the FilterSet's
fields, then the search box, the ordering among the allowed values and the page size), and
``get_filterset_class`` lets schema generators (drf-spectacular's django-filter support)
document its parameters.

Both are the caller's view of the FilterSet: a filter over a field that the serializer's
``Meta.field_auth_types`` hides from the caller's auth type (``fund_account`` for a public
caller) is left out of the form and the schema, and the view refuses it like an unknown
parameter (:func:`hidden_filters`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import django_filters
from django import forms
from django.core.exceptions import FieldDoesNotExist
from django.template import loader
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import APIException
from rest_framework.generics import GenericAPIView

from datapipe_django.conf import datapipe_settings
from datapipe_django.specs.paths import head

__all__ = ["PipelineFilterBackend", "caller_auth_type", "filter_parameters", "hidden_filters"]

_NARROWED: dict[tuple[type[Any], frozenset[str]], type[Any]] = {}


def caller_auth_type(view: Any) -> str | None:
    """The auth type of the caller ``view`` serves (``view.get_auth_type()``), None without a
    request or when its credentials are malformed (a schema generated without a caller)."""
    if getattr(view, "request", None) is None:
        return None
    try:
        return view.get_auth_type()  # type: ignore[no-any-return]
    except APIException:
        return None


def _hidden_model_fields(view: Any, auth_type: str | None) -> set[str]:
    """Names of the pipeline model's fields whose serializer field is hidden from
    ``auth_type`` (``Meta.field_auth_types``, see ``AuthTypeFieldsMixin``)."""
    if getattr(view, "serializer_class", None) is None and \
            type(view).get_serializer_class is GenericAPIView.get_serializer_class:
        return set()  # a viewset without a serializer: nothing is hidden
    serializer_class = view.get_serializer_class()
    serializer = serializer_class(context={"auth_type": auth_type})
    get_restricted = getattr(serializer, "get_field_auth_types", None)
    restricted = get_restricted() if callable(get_restricted) else {}
    model = view.get_pipeline().model
    declared = getattr(serializer_class, "_declared_fields", {})
    hidden: set[str] = set()
    for name, allowed in restricted.items():
        if isinstance(allowed, Collection) and auth_type in allowed:
            continue
        field = declared.get(name)
        source = getattr(field, "id_source", None) or getattr(field, "source", None) or name
        try:
            hidden.add(model._meta.get_field(str(source).split(".")[0]).name)
        except FieldDoesNotExist:
            continue
    return hidden


def hidden_filters(view: Any, auth_type: str | None) -> frozenset[str]:
    """The FilterSet's filters over a field hidden from ``auth_type``: their ``field_name``
    starts with such a field (``fund_account``, ``fund_account__contact__name``)."""
    filterset = view.get_pipeline().filterset_class
    if filterset is None:
        return frozenset()
    hidden = _hidden_model_fields(view, auth_type)
    if not hidden:
        return frozenset()
    return frozenset(
        name for name, f in filterset.base_filters.items()
        if head(str(getattr(f, "field_name", "") or "")) in hidden
    )


def filter_parameters(filterset: type[Any], name: str) -> list[str]:
    """The query parameters of filter ``name`` (``created_at`` → ``created_at_after``,
    ``created_at_before``; a plain filter is its name)."""
    suffixes = getattr(filterset.base_filters[name].field.widget, "suffixes", None)
    if not suffixes:
        return [name]
    return [f"{name}_{s}" if s else name for s in suffixes]


def _narrowed(filterset: type[Any], hidden: frozenset[str]) -> type[Any]:
    """``filterset`` without the filters ``hidden`` (one class per combination)."""
    key = (filterset, hidden)
    found = _NARROWED.get(key)
    if found is None:
        found = type(filterset.__name__, (filterset,), {"__module__": filterset.__module__})
        found.base_filters = {n: f for n, f in filterset.base_filters.items() if n not in hidden}
        _NARROWED[key] = found
    return found


class PipelineFilterBackend(DjangoFilterBackend):
    """Describes ``view.get_pipeline().filterset_class`` as the caller may use it; filters
    nothing itself."""

    def get_filterset_class(self, view: Any, queryset: Any = None) -> Any:
        filterset = view.get_pipeline().filterset_class
        if filterset is None:
            return None
        hidden = hidden_filters(view, caller_auth_type(view))
        return _narrowed(filterset, hidden) if hidden else filterset

    def filter_queryset(self, request: Any, queryset: Any, view: Any) -> Any:
        return queryset  # the pipeline's sources apply the filters

    def get_filterset(self, request: Any, queryset: Any, view: Any) -> Any:
        filterset = super().get_filterset(request, queryset, view)
        if filterset is None:  # no FilterSet: the form still offers q, ordering and limit
            pipeline = view.get_pipeline()
            meta = type("Meta", (), {"model": pipeline.model, "fields": []})
            empty = type("PipelineFilterSet", (django_filters.FilterSet,), {"Meta": meta})
            filterset = empty(data=request.query_params, queryset=queryset, request=request)
        return filterset

    def get_form_fields(self, view: Any) -> dict[str, forms.Field]:
        """The fields the form adds after the FilterSet's: ``q`` (with ``search_fields``),
        ``ordering`` (the allowed values, both directions) and ``limit``. Override to add."""
        pipeline = view.get_pipeline()
        fields: dict[str, forms.Field] = {}
        if pipeline.search_fields:
            fields[getattr(view, "search_param", "q")] = forms.CharField(
                required=False, label="Search",
                help_text=f"Every word in one of: {', '.join(pipeline.search_fields)}.")
        default = ",".join(("-" if f.descending else "") + f.name
                           for f in pipeline.default_ordering.fields)
        names = sorted(pipeline.ordering_fields - {"pk"})
        fields[getattr(view, "ordering_param", "ordering")] = forms.ChoiceField(
            required=False, label="Ordering",
            choices=[("", f"default ({default})")]
            + [(v, v) for name in names for v in (name, f"-{name}")])
        fields[getattr(view, "limit_param", "limit")] = forms.IntegerField(
            required=False, label="Limit", min_value=1,
            max_value=int(datapipe_settings.MAX_LIMIT),
            help_text=f"Items per page (default {int(datapipe_settings.DEFAULT_LIMIT)}).")
        return fields

    def to_html(self, request: Any, queryset: Any, view: Any) -> Any:
        filterset = self.get_filterset(request, queryset, view)
        form = filterset.form
        extra = self.get_form_fields(view)
        search = getattr(view, "search_param", "q")
        first = {search: extra.pop(search)} if search in extra else {}
        form.fields = {**first, **form.fields, **extra}  # the search box on top
        return loader.get_template(self.template).render({"filter": filterset}, request)
