"""Parsing ``expand`` query parameters and rendering expandable relations."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.db import models
from rest_framework import serializers

from datapipe_django.enrichers.prefetch import cache_name_of
from datapipe_django.request import parse_names
from datapipe_django.rest.sparse import restrict
from datapipe_django.specs.paths import field_of

__all__ = ["ExpandableField", "parse_expand"]


def parse_expand(query_params: Any) -> frozenset[str]:
    """``expand[]=a&expand[]=b.c`` or ``expand=a,b.c`` (both forms may repeat and mix) →
    ``{"a", "b.c"}``.

    Names are only split and stripped here; validation (unknown names, depth, auth type) is the
    pipeline's job, in its validate stage. The one splitter is
    :func:`datapipe_django.request.parse_names` (``PipelineRequest(expand=...)`` splits the same
    way), so a control character is a (bad) name here too, not a blank."""
    return parse_names(query_params, "expand")


class ExpandableField(serializers.Field):
    """Renders a relation as its id, or as ``serializer_class`` when the request expanded it.

    The path of the field (``fund_account``, or ``fund_account.contact`` inside a nested
    expansion) is checked against the request's expand set, which the view puts in the
    serializer context. An expansion is rendered only when the related data is already loaded
    (by an enricher), so rendering never issues a query per item. ``id_source`` names the
    attribute that holds the id when not expanded (default: the foreign key's ``<name>_id``).

    Like a DRF nested serializer, the nested serializer is built once per field (not once per
    row) and reused for every row of the page.
    """

    def __init__(self, serializer_class: type[serializers.BaseSerializer[Any]], *,
                 id_source: str | None = None, many: bool = False, **kwargs: Any) -> None:
        kwargs["read_only"] = True
        super().__init__(**kwargs)
        self.serializer_class = serializer_class
        self.id_source = id_source
        self.many = many
        self._expanded: bool | None = None
        self._nested: dict[bool, serializers.BaseSerializer[Any]] = {}

    @property
    def path(self) -> str:
        return f"{self.context.get('expand_prefix', '')}{self.field_name}"

    def get_attribute(self, instance: Any) -> Any:
        return instance  # to_representation needs the instance itself

    def to_representation(self, instance: Any) -> Any:
        if self._expanded is None:  # the context is fixed for the serializer's lifetime
            self._expanded = self.path in self.context.get("expand", frozenset())
        if self._expanded:
            loaded, value, many = self.loaded_value(instance)
            if loaded:
                return None if value is None else self.nested(many).to_representation(value)
        return self._id(instance, self.source or self.field_name or "")

    def loaded_value(self, instance: Any) -> tuple[bool, Any, bool]:
        """``(True, value, many)`` when the relation is loaded on ``instance`` (``value`` is
        the related object, None, or for a to-many relation the list of related objects),
        else ``(False, None, False)``: reading it would query.

        How to read it is worked out once per model class and source (:func:`_reader`): per
        row it is one dictionary lookup, as DRF's nested serializer reads a loaded relation."""
        kind: Any = type(instance)
        return _reader(kind, self.source or self.field_name or "", self.many)(instance)

    def nested(self, many: bool) -> serializers.BaseSerializer[Any]:
        """The serializer of the expanded value (built on first use, with the path below)."""
        serializer = self._nested.get(many)
        if serializer is None:
            context = {**self.context, "expand_prefix": f"{self.path}."}
            serializer = self.serializer_class(many=many, context=context)
            if context.get("fields") or context.get("omit"):  # sparse fieldsets below here
                restrict(serializer, context.get("fields", ()), context.get("omit", ()),
                         prefix=f"{self.path}.")
            self._nested[many] = serializer
        return serializer

    def _id(self, instance: Any, source: str) -> Any:
        if self.id_source:
            return getattr(instance, self.id_source, None)
        field = _model_field(instance, source)
        if field is None:
            return _loaded_pk(instance, source)
        if field.concrete and (field.many_to_one or field.one_to_one):
            return getattr(instance, field.attname)
        if field.many_to_many or field.one_to_many:
            related = getattr(instance, "_prefetched_objects_cache", {}).get(_cache_name(field))
            return [obj.pk for obj in related] if related is not None else None
        return _loaded_pk(instance, source)


def _loaded_pk(instance: Any, source: str) -> Any:
    """The pk of what ``source`` holds once loaded (the value itself when it has none)."""
    value = _loaded_value(instance, source) if _is_loaded(instance, source) else None
    return getattr(value, "pk", value)


_NOT_LOADED: tuple[bool, Any, bool] = (False, None, False)
_LOADED_NONE: tuple[bool, Any, bool] = (True, None, False)

Reader = Callable[[Any], tuple[bool, Any, bool]]


@functools.lru_cache(maxsize=1024)
def _reader(kind: Any, source: str, many: bool) -> Reader:
    """How :meth:`ExpandableField.loaded_value` reads ``source`` on instances of ``kind``.

    A model relation is read where Django keeps it once loaded: a to-one relation in
    ``_state.fields_cache``, a to-many one in ``_prefetched_objects_cache`` (a queryset whose
    rows are already fetched). Anything else (an attribute a service enricher set, an object
    that is not a model instance) takes the general route of :func:`_is_loaded` and
    :func:`_loaded_value`."""
    field = field_of(kind, source, accessors=True) if hasattr(kind, "_meta") else None
    if field is None or not field.is_relation:
        return _general_reader(source, many)
    if not many and (field.many_to_one or field.one_to_one):
        return _to_one_reader(cache_name_of(field))
    if field.many_to_many or field.one_to_many:
        return _to_many_reader(cache_name_of(field))
    return _general_reader(source, many)


def _to_one_reader(name: str) -> Reader:
    def to_one(instance: Any) -> tuple[bool, Any, bool]:
        cache = instance._state.fields_cache
        if name not in cache:
            return _NOT_LOADED
        value = cache[name]
        return _LOADED_NONE if value is None else (True, value, False)

    return to_one


def _to_many_reader(name: str) -> Reader:
    def to_many(instance: Any) -> tuple[bool, Any, bool]:
        cached = instance.__dict__.get("_prefetched_objects_cache")
        if cached is None or name not in cached:
            return _NOT_LOADED
        return True, list(cached[name]), True  # its rows are fetched: no query

    return to_many


def _general_reader(source: str, many: bool) -> Reader:
    def general(instance: Any) -> tuple[bool, Any, bool]:
        if not _is_loaded(instance, source):
            return _NOT_LOADED
        value = _loaded_value(instance, source)
        if value is None:
            return _LOADED_NONE
        as_list = many or isinstance(value, models.Manager | models.QuerySet | list | tuple)
        if as_list:
            value = list(value.all()) if hasattr(value, "all") else list(value)
        return True, value, as_list

    return general


def _model_field(instance: Any, name: str) -> Any:
    model: Any = type(instance)
    return field_of(model, name, accessors=True) if hasattr(instance, "_meta") else None


@functools.lru_cache(maxsize=512)
def _cache_name(field: Any) -> str:
    """Key of a to-many relation in ``_prefetched_objects_cache``."""
    return cache_name_of(field)


def _loaded_value(instance: Any, name: str) -> Any:
    """``instance.<name>`` once loaded; a missing reverse one-to-one is None (not an error)."""
    field = _model_field(instance, name)
    if field is not None and field.is_relation and (field.many_to_one or field.one_to_one):
        return field.get_cached_value(instance, default=None)
    return getattr(instance, name, None)


def _is_loaded(instance: Any, name: str) -> bool:
    """True when reading ``instance.<name>`` issues no query."""
    field = _model_field(instance, name)
    if field is None or not field.is_relation:
        return field is not None or name in getattr(instance, "__dict__", {})
    if field.many_to_many or field.one_to_many:
        return _cache_name(field) in getattr(instance, "_prefetched_objects_cache", {})
    return bool(field.is_cached(instance))
