"""Sparse fieldsets: ``?fields=`` and ``?omit=`` (drf-flex-fields' names), nested with dots.

``fields=id,amount,user.name`` renders ``id``, ``amount`` and ``user``, and inside an expanded
``user`` only its ``name``; ``omit=narration,fund_account.details`` renders everything but
``narration``, and ``fund_account`` without its ``details``. Both may be given (``fields``
first, then ``omit``); ``fields[]=``/``omit[]=`` and repeated parameters work as for ``expand``.
A name below a field (``user.name``) narrows that field's nested object when it is rendered
(expanded); a field that is listed itself and also below (``user,user.name``) is narrowed.

Names are checked against the serializer as the caller sees it (fields its auth type may not
see are unknown to it): an unknown one is a 400 naming ``fields`` or ``omit``. The view derives
from the narrowed serializer the model fields the response reads (:func:`model_fields`), and
the pipeline's sources load only those columns (see ``datapipe_django.stages.load_fields``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models
from rest_framework import serializers
from rest_framework.utils.serializer_helpers import BindingDict

from datapipe_django.request import parse_names

__all__ = ["check_fieldsets", "model_fields", "narrow", "parse_fieldset", "restrict",
           "unknown_paths"]

#: Narrowed field sets and checked fieldsets, per serializer class and what decides its fields
#: (``datapipe_django.rest.compiled.field_key``): building a ModelSerializer's fields costs
#: about a millisecond, a copy of a few narrowed ones a few microseconds.
_NARROWED: dict[tuple[Any, ...], dict[str, Any]] = {}
_CHECKED: dict[tuple[Any, ...], tuple[dict[str, list[str]], frozenset[str] | None]] = {}
_MAX_ENTRIES = 1024


def parse_fieldset(query_params: Any, name: str) -> frozenset[str]:
    """``name=a,b.c`` or ``name[]=a&name[]=b.c`` (may repeat and mix) → ``{"a", "b.c"}``
    (:func:`datapipe_django.request.parse_names`, the one splitter of name lists)."""
    return parse_names(query_params, name)


def _below(paths: Iterable[str], prefix: str) -> list[str]:
    return [p[len(prefix):] for p in paths if p.startswith(prefix) and len(p) > len(prefix)]


def _fields_of(serializer: Any) -> Any:
    """The field dict of a serializer (its child's, for ``many=True``)."""
    target = serializer.child if isinstance(serializer, serializers.ListSerializer) \
        else serializer
    return target.fields if isinstance(target, serializers.Serializer) else None


def restrict(serializer: Any, fields: Iterable[str], omit: Iterable[str],
             prefix: str = "") -> Any:
    """Remove from ``serializer`` (and its plain nested serializers) the fields that
    ``fields``/``omit`` leave out at ``prefix`` (``""`` for the top level, ``"user."`` inside
    ``user``). Returns the serializer. Unknown names are ignored here (see
    :func:`unknown_paths`)."""
    found = _fields_of(serializer)
    if found is None:
        return serializer
    fields, omit = list(fields), list(omit)
    for name in _left_out(list(found), fields, omit, prefix):
        del found[name]
    for name, field in found.items():
        if isinstance(field, serializers.BaseSerializer):
            restrict(field, fields, omit, f"{prefix}{name}.")
    return serializer


def _left_out(names: list[str], fields: list[str], omit: list[str], prefix: str) -> list[str]:
    """The names of ``names`` that ``fields``/``omit`` leave out at ``prefix``."""
    keep = {p.split(".")[0] for p in _below(fields, prefix) if p}
    drop = {p for p in _below(omit, prefix) if "." not in p}
    return [name for name in names if (keep and name not in keep) or name in drop]


def _nested(field: Any, context: dict[str, Any]) -> Any:
    """The serializer below ``field`` (an ExpandableField's or a nested serializer), or None."""
    if isinstance(field, serializers.BaseSerializer):
        return field
    serializer_class = getattr(field, "serializer_class", None)
    if isinstance(serializer_class, type) and issubclass(serializer_class,
                                                         serializers.BaseSerializer):
        return serializer_class(context=context)
    return None


def unknown_paths(serializer: Any, paths: Iterable[str]) -> list[str]:
    """The paths of ``paths`` that name no field of ``serializer`` (as its context's caller
    sees it), sorted."""
    context = dict(getattr(serializer, "context", {}) or {})
    unknown = []
    for path in sorted(set(paths)):
        current: Any = serializer
        for i, segment in enumerate(path.split(".")):
            found = _fields_of(current) if current is not None else None
            if found is None or segment not in found:
                unknown.append(path)
                break
            if i < path.count("."):
                current = _nested(found[segment], context)
    return unknown


def _model_field(model: type[models.Model], name: str) -> Any:
    try:
        return model._meta.get_field(name)
    except FieldDoesNotExist:
        return None


def model_fields(serializer: Any, model: type[models.Model]) -> frozenset[str] | None:
    """The concrete fields of ``model`` that rendering ``serializer`` (already narrowed) reads,
    or None when a field's source cannot be told (``source="*"``, a method field, a property):
    then every field is loaded."""
    found = _fields_of(serializer)
    if found is None:
        return None
    needed: set[str] = set()
    for field in found.values():
        read = _reads(field, model)
        if read is None:
            return None
        needed.update(read)
    return frozenset(needed)


def _reads(field: Any, model: type[models.Model]) -> tuple[str, ...] | None:
    """The concrete field of ``model`` that rendering ``field`` reads (none: only the pk, a
    relation's), or None when its source cannot be told."""
    id_source = getattr(field, "id_source", None)
    attrs = [id_source] if id_source else list(getattr(field, "source_attrs", []) or [])
    if not attrs or field.source == "*":
        return None
    target = _model_field(model, attrs[0])
    if target is None:
        # A reverse relation by its accessor reads only the pk (always loaded).
        reverse = any(r.get_accessor_name() == attrs[0] for r in model._meta.related_objects)
        return () if reverse else None
    if target.concrete:
        return (target.name,)
    return () if target.is_relation else None


def _cache_key(serializer: Any, *parts: Any) -> tuple[Any, ...] | None:
    """The key of ``serializer``'s field set (its class and, when its fields depend on it, the
    caller's auth type), with ``parts``; None when its fields may depend on anything else."""
    from datapipe_django.rest.compiled import field_key

    child = serializer.child if isinstance(serializer, serializers.ListSerializer) \
        else serializer
    if not isinstance(child, serializers.Serializer) or "fields" in child.__dict__:
        return None
    key = field_key(child)
    return None if key is None else (type(child), key, *parts)


def _remember(cache: dict[tuple[Any, ...], Any], key: tuple[Any, ...], value: Any) -> None:
    if len(cache) >= _MAX_ENTRIES:
        cache.clear()
    cache[key] = value


def narrow(serializer: Any, fields: frozenset[str], omit: frozenset[str]) -> Any:
    """:func:`restrict` at the top level, from a narrowed copy of the class's fields when they
    depend on nothing but the class and the auth type (and hold no plain nested serializer,
    whose own narrowing a copy would lose). Returns the serializer."""
    key = _cache_key(serializer, fields, omit)
    if key is None:
        return restrict(serializer, fields, omit)
    child: Any = serializer.child if isinstance(serializer, serializers.ListSerializer) \
        else serializer
    template = _NARROWED.get(key)
    if template is None:
        probe = type(child)(context={"auth_type": child.context.get("auth_type")})
        restrict(probe, fields, omit)
        template = dict(probe.fields)
        if any(isinstance(f, serializers.BaseSerializer) for f in template.values()):
            return restrict(serializer, fields, omit)
        _remember(_NARROWED, key, template)
    bound = BindingDict(child)
    for name, field in template.items():
        bound[name] = copy.deepcopy(field)
    child.__dict__["fields"] = bound  # what DRF's cached `fields` property would hold
    return serializer


def check_fieldsets(serializer: Any, fields: frozenset[str], omit: frozenset[str],
                    model: type[models.Model], *, names: tuple[str, str] = ("fields", "omit")
                    ) -> tuple[dict[str, list[str]], frozenset[str] | None]:
    """``({parameter: messages}, model fields to load)`` for ``fields``/``omit`` against
    ``serializer`` (a fresh one, its context holding the caller's auth type): the unknown
    names, and :func:`model_fields` of the narrowed serializer. Remembered per field set."""
    key = _cache_key(serializer, fields, omit, model, names)
    if key is not None and key in _CHECKED:
        errors, only = _CHECKED[key]
        return {k: list(v) for k, v in errors.items()}, only
    errors = {
        param: [f"Unknown field {path[:100]!r}." for path in unknown]
        for param, paths in zip(names, (fields, omit), strict=True)
        if (unknown := unknown_paths(serializer, paths))
    }
    only = None
    if not errors:
        restrict(serializer, fields, omit)
        only = model_fields(serializer, model)
    if key is not None:
        _remember(_CHECKED, key, ({k: list(v) for k, v in errors.items()}, only))
    return errors, only
