"""Read-only serializers compiled once per class: ``PipelineViewSet``'s fast path.

DRF renders a row field by field through generic machinery (``get_attribute`` walks the
source, checks for mappings and callables, ``to_representation`` dispatches per field). For a
``ModelSerializer`` whose fields read model columns, the same answer is a plain attribute read
and a conversion. :func:`serializer_data` gives ``serializer.data`` computed that way: for
each serializer class (and each set of fields a caller sees: its auth type, ``fields``/``omit``,
its expansions) one Python function is generated that builds a row's dict::

    def row(obj):
        d = {}
        v = obj.id
        d['id'] = None if v is None else int(v)
        v = obj.status
        d['status'] = None if v is None else (m2.get(v, v) if v.__class__ is str else c2(v))
        ...

What compiles: fields whose ``source`` is one concrete column of ``Meta.model`` (or a foreign
key's ``<name>_id``, or ``pk``) and whose class uses DRF's own ``get_attribute`` and the
``to_representation`` of ``IntegerField``, ``CharField`` (and its subclasses), ``FloatField``,
``BooleanField``, ``ChoiceField``, ``DateField``, ``DateTimeField`` (ISO 8601) or
``ReadOnlyField``; other DRF fields that depend on nothing but their value (``DecimalField``,
``UUIDField``, ``TimeField``, ``DurationField``, ``JSONField``...) keep their own conversion
behind the plain read; an :class:`~datapipe_django.rest.ExpandableField` that the request does
not expand is its id read, an expanded one its loaded value through its own serializer,
compiled in its turn. Everything else (a ``SerializerMethodField``, a field with its own
``to_representation`` or ``get_attribute``, a nested serializer, a dotted source) runs DRF's
own code for that field, with the request's bound field. A serializer
with its own ``to_representation``/``get_fields``/``data`` that this module does not know, a
``ListSerializer`` subclass that renders differently, rows that are not instances of the model:
all of ``serializer.data``, untouched. ``DATAPIPE["FAST_PATH"] = False`` turns it off.

No per-request work that can be done per class: a request reads its field set from a cache
keyed by what decides it, binds the few fields that need it, and runs the row function.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import keyword
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.signals import setting_changed
from django.db import models
from django.db.models import Model
from django.db.models.manager import BaseManager
from django.utils import timezone
from rest_framework import ISO_8601, serializers
from rest_framework import fields as drf_fields
from rest_framework.fields import SkipField
from rest_framework.relations import PKOnlyObject
from rest_framework.settings import api_settings
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from datapipe_django.conf import datapipe_settings
from datapipe_django.rest.expand import ExpandableField
from datapipe_django.rest.renderers import FiniteDict, FiniteList
from datapipe_django.rest.serializers import AuthTypeFieldsMixin

__all__ = ["clear_cache", "field_key", "serializer_data"]

#: The get_fields() implementations whose answer depends only on the class and, for
#: AuthTypeFieldsMixin, on ``context["auth_type"]``.
_KNOWN_GET_FIELDS = (serializers.ModelSerializer.get_fields, AuthTypeFieldsMixin.get_fields)
_MAX_PLANS = 1024

_lock = threading.Lock()
_templates: dict[tuple[type, Any], tuple[str, ...] | None] = {}
_template_fields: dict[tuple[type, Any], dict[str, Any]] = {}
_plans: dict[tuple[Any, ...], _Plan | None] = {}


def clear_cache() -> None:
    """Forget every compiled serializer (done on ``setting_changed`` of the settings they read)."""
    with _lock:
        _templates.clear()
        _template_fields.clear()
        _plans.clear()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in {"REST_FRAMEWORK", "DATAPIPE", "USE_TZ", "TIME_ZONE"}:
        clear_cache()


setting_changed.connect(_on_setting_changed)


# -- entry point -------------------------------------------------------------------------------

def serializer_data(serializer: Any) -> Any:
    """``serializer.data``, the same value, computed by the compiled function of its class
    when it has one (see the module docstring); otherwise DRF's own ``.data``."""
    if not datapipe_settings.FAST_PATH:
        return serializer.data
    many = isinstance(serializer, serializers.ListSerializer)
    child = serializer.child if many else serializer
    plan = _plan_for(child) if _unrendered(serializer) and \
        _renders_plainly(serializer, child, many) else None
    if plan is None:
        return serializer.data
    if many:
        return _list_data(serializer, plan, child)
    if not isinstance(serializer.instance, plan.model):
        return serializer.data
    serializer._data = plan.bind(child)(serializer.instance)
    return (FiniteDict if plan.finite else ReturnDict)(serializer._data, serializer=serializer)


def _unrendered(serializer: Any) -> bool:
    """Whether ``serializer`` renders an instance and has not rendered (nor validated) yet."""
    return not (getattr(serializer, "instance", None) is None
                or hasattr(serializer, "initial_data") or hasattr(serializer, "_data"))


def _list_data(serializer: Any, plan: _Plan, child: Any) -> Any:
    """A ``ListSerializer``'s data through ``plan``'s rows (DRF's own when a row is not an
    instance of the plan's model)."""
    instance = serializer.instance
    items = instance.all() if isinstance(instance, BaseManager) else instance
    items = items if isinstance(items, list) else list(items)
    model = plan.model
    if not all(isinstance(obj, model) for obj in items):
        return serializer.data
    row = plan.bind(child)
    rows = [row(obj) for obj in items]
    serializer._data = rows
    return (FiniteList if plan.finite else ReturnList)(rows, serializer=serializer)


def _renders_plainly(serializer: Any, child: Any, many: bool) -> bool:
    """Whether the classes render with DRF's own machinery (nothing overridden that matters)."""
    if many:
        kind = type(serializer)
        if (kind.to_representation is not serializers.ListSerializer.to_representation
                or kind.data is not serializers.ListSerializer.data):
            return False
    kind = type(child)
    return (isinstance(child, serializers.ModelSerializer)
            and kind.to_representation is serializers.Serializer.to_representation
            and kind.data is serializers.Serializer.data
            and kind._readable_fields is serializers.Serializer._readable_fields)


# -- which fields a request sees ---------------------------------------------------------------

def field_key(child: Any) -> tuple[Any, ...] | None:
    """What decides the serializer's fields besides its class, when known; None when only
    ``child.fields`` can tell (a get_fields() this module does not know)."""
    kind = type(child)
    if kind.get_fields not in _KNOWN_GET_FIELDS or (
            kind.__init__ is not serializers.BaseSerializer.__init__):
        return None  # its own __init__ may shape the fields per instance
    if isinstance(child, AuthTypeFieldsMixin):
        if kind.get_field_auth_types is not AuthTypeFieldsMixin.get_field_auth_types:
            return None
        if child.get_field_auth_types():
            return ("auth_type", child.context.get("auth_type"))
    return ()


def _own_fields(child: Any) -> tuple[tuple[str, ...], Mapping[str, Any]]:
    """The names of ``child.fields`` it renders (not write-only), in order, and the fields."""
    found = child.fields
    return tuple(n for n, f in found.items() if not f.write_only), found


def _names_and_fields(child: Any) -> tuple[tuple[str, ...], Mapping[str, Any]]:
    """The names of the fields this request renders, in order, and field objects to compile
    them from (the request's own when they are built already, else a per-class template)."""
    if "fields" in child.__dict__:  # built already (e.g. narrowed by fields/omit): they rule
        return _own_fields(child)
    key = field_key(child)
    if key is None:
        return _own_fields(child)
    cache_key = (type(child), key)
    names = _templates.get(cache_key)
    if names is None and len(_templates) >= _MAX_PLANS:  # classes made on the fly
        return _own_fields(child)
    if names is None:
        context = {"auth_type": key[1]} if key else {}
        names, found = _own_fields(type(child)(context=context))
        with _lock:
            _template_fields[cache_key] = dict(found)
            _templates[cache_key] = names
    return names, _template_fields[cache_key]


def _plan_for(child: Any) -> _Plan | None:
    names, found = _names_and_fields(child)
    context = child.context
    expand = context.get("expand") or frozenset()
    prefix = context.get("expand_prefix", "")
    expanded = tuple(
        name for name in names
        if isinstance(found[name], ExpandableField) and f"{prefix}{name}" in expand
    )
    key = (type(child), names, expanded)
    try:
        return _plans[key]
    except KeyError:
        pass
    plan = _compile(type(child), names, found, frozenset(expanded))
    with _lock:
        if len(_plans) >= _MAX_PLANS:
            _plans.clear()
        _plans[key] = plan
    return plan


# -- compiling ---------------------------------------------------------------------------------

def _plain_source(model: type[Model], field: Any) -> str | None:
    """The attribute that holds ``field``'s value when it is one concrete column, else None."""
    attrs = getattr(field, "source_attrs", None)
    if field.source == "*" or not attrs or len(attrs) != 1:
        return None
    attr = attrs[0]
    if attr == "pk":
        return attr
    for model_field in model._meta.concrete_fields:
        if attr in (model_field.attname, model_field.name) and (
                not model_field.is_relation or attr == model_field.attname):
            return attr
    return None


def _resolves_to(field: Any, name: str, base: type) -> bool:
    return getattr(type(field), name) is getattr(base, name)


#: Field classes whose to_representation depends on the value (and the field's own options)
#: only: with DRF's get_attribute they compile to a plain read plus that conversion.
_VALUE_ONLY = (
    drf_fields.DecimalField, drf_fields.UUIDField, drf_fields.TimeField,
    drf_fields.DurationField, drf_fields.JSONField, drf_fields.MultipleChoiceField,
    drf_fields.IPAddressField, drf_fields.ModelField,
)


def _conversion(field: Any, n: int, ns: dict[str, Any]) -> str | None:
    """The expression turning the non-None column value ``v`` into ``field``'s output, with
    what it needs put in ``ns``; None when the field's conversion is not known to be
    context-free."""
    ns[f"c{n}"] = field.to_representation
    for base, conversion in _CONVERSIONS:
        if _resolves_to(field, "to_representation", base):
            return conversion(field, n, ns)
    return None


def _bigint(field: Any, n: int, ns: dict[str, Any]) -> str:
    as_text = getattr(field, "coerce_to_string",
                      getattr(api_settings, "COERCE_BIGINT_TO_STRING", False))
    return "str(v)" if as_text else "int(v)"


def _boolean(field: Any, n: int, ns: dict[str, Any]) -> str:
    return f"(v if v.__class__ is bool else c{n}(v))"


def _choice(field: Any, n: int, ns: dict[str, Any]) -> str:
    ns[f"m{n}"] = field.choice_strings_to_values
    return f"(m{n}.get(v, v) if v.__class__ is str else c{n}(v))"


def _date(field: Any, n: int, ns: dict[str, Any]) -> str:
    if str(getattr(field, "format", api_settings.DATE_FORMAT) or "").lower() == ISO_8601:
        ns["_date"] = dt.date
        return f"(v.isoformat() if v.__class__ is _date else c{n}(v))"
    return f"c{n}(v)"


def _datetime(field: Any, n: int, ns: dict[str, Any]) -> str:
    fmt = getattr(field, "format", api_settings.DATETIME_FORMAT)
    if not (str(fmt or "").lower() == ISO_8601
            and _resolves_to(field, "enforce_timezone", drf_fields.DateTimeField)
            and _resolves_to(field, "default_timezone", drf_fields.DateTimeField)):
        return f"c{n}(v)"
    # The zone is the field's own or the one active now, as DRF reads it per value.
    ns["_aware_iso"] = _aware_iso
    if hasattr(field, "timezone"):
        ns[f"z{n}"] = field.timezone
        return f"_aware_iso(v, z{n}, c{n})"
    return f"_aware_iso(v, zone, c{n})"  # the zone active for this request


def _fixed(expression: str) -> Callable[[Any, int, dict[str, Any]], str]:
    """A conversion that is the same expression for every field of its class."""
    def conversion(field: Any, n: int, ns: dict[str, Any]) -> str:
        return expression.format(n=n)
    return conversion


#: The DRF field classes whose ``to_representation`` compiles, and how (in this order).
_CONVERSIONS: list[tuple[type, Callable[[Any, int, dict[str, Any]], str]]] = [
    (drf_fields.IntegerField, _fixed("int(v)")),
    *([(drf_fields.BigIntegerField, _bigint)]  # DRF 3.16+
      if hasattr(drf_fields, "BigIntegerField") else []),
    (drf_fields.CharField, _fixed("str(v)")),
    (drf_fields.FloatField, _fixed("float(v)")),
    (drf_fields.ReadOnlyField, _fixed("v")),
    (drf_fields.BooleanField, _boolean),
    (drf_fields.ChoiceField, _choice),
    (drf_fields.DateField, _date),
    (drf_fields.DateTimeField, _datetime),
    *((base, _fixed("c{n}(v)")) for base in _VALUE_ONLY),
]


def _aware_iso(value: Any, zone: Any, convert: Callable[[Any], Any]) -> Any:
    """DRF's ISO 8601 rendering of an aware datetime in ``zone`` (``Z`` for UTC); anything
    else (a naive datetime, no zone) through the field's own ``convert``."""
    if (zone is None or value.__class__ is not dt.datetime or value.tzinfo is None
            or value.utcoffset() is None):
        return convert(value)
    if value.tzinfo is not zone:
        try:
            value = value.astimezone(zone)
        except OverflowError:
            return convert(value)  # DRF's own error
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _current_zone() -> Any:
    """The zone DRF's DateTimeField renders in when it has none of its own."""
    from django.conf import settings

    return timezone.get_current_timezone() if settings.USE_TZ else None


class _Plan:
    """One serializer class's row function for one set of fields, and how to bind it."""

    def __init__(self, model: type[Model], source: str, ns: dict[str, Any],
                 bound: tuple[str, ...], zoned: bool, finite: bool,
                 templates: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.finite = finite  # rows hold no NaN or infinity: the renderer need not look
        self.source = source
        self.bound = bound  # names of fields that run DRF's code with the request's field
        # When every bound field is an expanded ExpandableField of the library's own code:
        # the unbound field of each (bound per request without building the serializer's
        # other fields, which is what DRF's ``fields`` would cost).
        self.templates = templates
        self.zoned = zoned  # whether the row function needs the active time zone
        namespace = dict(ns)
        exec(compile(source, f"<datapipe compiled serializer {model.__name__}>", "exec"),
             namespace)
        self._factory: Callable[..., Callable[[Any], dict[str, Any]]] = namespace["bind"]

    def bind(self, child: Any) -> Callable[[Any], dict[str, Any]]:
        """The row function for this request: its zone, its bound fields."""
        zone = _current_zone() if self.zoned else None
        if not self.bound:
            return self._factory(zone)
        if self.templates is not None and "fields" not in child.__dict__:
            return self._factory(zone, *(_bound_copy(self.templates[name], name, child)
                                         for name in self.bound))
        found = child.fields
        return self._factory(zone, *(found[name] for name in self.bound))


def _bound_copy(template: Any, name: str, child: Any) -> Any:
    """``template`` as ``child.fields[name]`` would hold it: a fresh copy (DRF's deepcopy
    rebuilds a field from its arguments) bound to ``child``, with none of ``child``'s other
    fields built."""
    field = copy.deepcopy(template)
    field.bind(field_name=name, parent=child)
    return field


@dataclass
class _Piece:
    """What one field contributes to a row function: its ``lines``, whether it needs the
    request's bound field (``f<n>``), the per-request cache it keeps (``r<n>``), and whether
    it never gives a float (so no NaN for the renderer to look for)."""

    lines: list[str]
    bound: bool = False
    cache: str | None = None
    finite: bool = False
    template: Any = None  # an expanded ExpandableField's unbound copy (see _Plan.templates)


def _compile(kind: type, names: tuple[str, ...], found: Mapping[str, Any],
             expanded: frozenset[str]) -> _Plan | None:
    model = kind.Meta.model  # type: ignore[attr-defined]
    ns: dict[str, Any] = {"SkipField": SkipField, "PKOnlyObject": PKOnlyObject,
                          "_nested": _nested}
    pieces = [_piece(model, name, found[name], n, ns, name in expanded)
              for n, name in enumerate(names)]
    bound = [name for name, piece in zip(names, pieces, strict=True) if piece.bound]
    args = ", ".join(["zone", *(f"f{names.index(name)}" for name in bound)])
    lines = [f"def bind({args}):", *(f"    {p.cache} = {{}}" for p in pieces if p.cache),
             "    def row(obj):", "        d = {}"]
    lines += [f"        {line}" for piece in pieces for line in piece.lines]
    lines += ["        return d", "    return row"]
    source = "\n".join(lines) + "\n"
    return _Plan(model, source, ns, tuple(bound), zoned="zone, c" in source,
                 finite=all(piece.finite for piece in pieces),
                 templates=_bound_templates(names, pieces))


def _bound_templates(names: tuple[str, ...], pieces: list[_Piece]) -> dict[str, Any] | None:
    """The unbound field of each bound piece, when every bound piece has one (see
    :attr:`_Plan.templates`), else None."""
    templates = {name: piece.template for name, piece in zip(names, pieces, strict=True)
                 if piece.bound}
    return templates if all(t is not None for t in templates.values()) else None


def _piece(model: type[Model], name: str, original: Any, n: int, ns: dict[str, Any],
           expanded: bool) -> _Piece:
    """How the row function renders field ``name`` (the ``n``-th): a plain read and a known
    conversion, an unexpanded relation's id, an expanded one's nested rows, or DRF's code."""
    # A fresh unbound copy (DRF rebuilds a field from its arguments): the plan outlives
    # the request, and must not keep its serializer (and its page) alive.
    field = copy.deepcopy(original)
    key = repr(name)
    plain = _plain_piece(model, original, field, key, n, ns)
    if plain is not None:
        return plain
    if isinstance(field, ExpandableField) and not expanded and _plain_expandable(
            field, ("to_representation", "get_attribute", "_id")):
        expression, float_free = _id_expression(model, field, original.source or name, n, ns)
        return _Piece([f"d[{key}] = {expression}"], finite=float_free)
    if isinstance(field, ExpandableField) and _plain_expandable(
            field, ("to_representation", "get_attribute", "_id", "loaded_value", "nested")):
        # Expanded: the loaded relation through its serializer, compiled in its turn.
        arg, source = f"f{n}", original.source or name
        return _Piece([
            f"ok, v, many = {arg}.loaded_value(obj)",
            "if ok:",
            f"    d[{key}] = None if v is None else "
            f"(r{n}.get(many) or _nested(r{n}, {arg}, many))(v)",
            "else:",
            f"    d[{key}] = {arg}._id(obj, {source!r})",
        ], bound=True, cache=f"r{n}", template=field)
    # DRF's own code for this field, with the request's bound field.
    arg = f"f{n}"
    return _Piece([
        "try:",
        f"    v = {arg}.get_attribute(obj)",
        "except SkipField:",
        "    pass",
        "else:",
        "    c = v.pk if isinstance(v, PKOnlyObject) else v",
        f"    d[{key}] = None if c is None else {arg}.to_representation(v)",
    ], bound=True)


def _plain_piece(model: type[Model], original: Any, field: Any, key: str, n: int,
                 ns: dict[str, Any]) -> _Piece | None:
    """A plain attribute read and a known conversion, when the field is one column read
    with DRF's own ``get_attribute``."""
    drf_default = (_resolves_to(field, "get_attribute", drf_fields.Field)
                   and not isinstance(field, serializers.BaseSerializer))
    attr = _plain_source(model, original) if drf_default else None
    convert = _conversion(field, n, ns) if attr is not None else None
    if convert is None or attr is None:
        return None
    read = f"obj.{attr}" if attr.isidentifier() and not keyword.iskeyword(attr) \
        else f"getattr(obj, {attr!r})"
    return _Piece([f"v = {read}", f"d[{key}] = None if v is None else {convert}"],
                  finite=_float_free(convert, field))


def _plain_expandable(field: Any, hooks: tuple[str, ...]) -> bool:
    """Whether an ``ExpandableField`` keeps the library's own ``hooks``."""
    return all(_resolves_to(field, hook, ExpandableField) for hook in hooks)


def _float_free(expression: str, field: Any) -> bool:
    """Whether a compiled conversion never gives a float (so never a NaN)."""
    if expression in ("int(v)", "str(v)") or expression.startswith(("(v if v.__class__ is bool",
                                                                    "(v.isoformat()",
                                                                    "_aware_iso(")):
        return True
    if expression.startswith("(m"):  # a choice: its values, or the value itself (a str)
        return not any(isinstance(v, float | decimal.Decimal)
                       for v in field.choice_strings_to_values.values())
    return False


def _nested(cache: dict[bool, Any], field: ExpandableField, many: bool) -> Any:
    """How ``field`` renders its loaded value for this request: ``field.nested(many)``'s
    ``to_representation``, through that serializer's compiled rows when it has them."""
    serializer: Any = field.nested(many)
    fallback: Callable[[Any], Any] = serializer.to_representation
    render = fallback
    child = serializer.child if many else serializer
    plan = _plan_for(child) if (datapipe_settings.FAST_PATH
                                and _renders_plainly(serializer, child, many)) else None
    if plan is not None:
        row, model = plan.bind(child), plan.model

        def compiled(value: Any) -> Any:
            if many:
                if all(isinstance(obj, model) for obj in value):
                    return [row(obj) for obj in value]
                return fallback(value)
            return row(value) if isinstance(value, model) else fallback(value)

        render = compiled
    cache[many] = render
    return render


def _id_expression(model: type[Model], field: ExpandableField, source: str, n: int,
                   ns: dict[str, Any]) -> tuple[str, bool]:
    """What an ExpandableField renders unexpanded: its id, read as ``_id`` reads it; and
    whether that id can never be a float."""
    if field.id_source:
        return f"getattr(obj, {field.id_source!r}, None)", False
    for model_field in model._meta.concrete_fields:
        if model_field.name == source and (model_field.many_to_one or model_field.one_to_one):
            target = model_field.target_field  # type: ignore[attr-defined]
            return f"obj.{model_field.attname}", not isinstance(
                target, models.FloatField | models.DecimalField)
    ns[f"e{n}"] = field._id
    return f"e{n}(obj, {source!r})", False
