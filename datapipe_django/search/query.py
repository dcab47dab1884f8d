"""Specs, orderings and whole requests as Elasticsearch/OpenSearch query bodies.

Everything here returns plain dicts (JSON-ready) and imports no search client. The same
:class:`~datapipe_django.specs.Spec` that compiles to a Django ``Q`` compiles here, and the
two select the same rows as ``Spec.matches()`` (tested against a real engine and PostgreSQL):

===============================  ==========================================================
spec                             query
===============================  ==========================================================
``Eq(f, v)``                     ``term`` on ``f``'s exact-value field
``IEq(f, v)``                    ``term`` with ``case_insensitive``
``In(f, vs)``                    ``terms``; None dropped, an empty list matches nothing
``Range(f, gt=, ...)``           ``range``; a bound outside an integer field's range is
                                 dropped (or matches nothing), as Django does
``Contains``/``StartsWith``/     ``wildcard``/``prefix`` (``*``, ``?`` and ``\\`` are literal),
``EndsWith``                     ``case_insensitive`` for the ``i`` lookups
``IsNull(f, True/False)``        ``must_not exists`` / ``exists``
``And``/``Or``/``Not``           ``bool`` ``filter`` / ``should`` / ``must_not``
``MatchAll``/``MatchNone``       ``match_all`` / ``match_none``
===============================  ==========================================================

NULL is a missing value: ``term``, ``range`` and the patterns never match it (SQL's
``NULL = x`` is never true) and ``must_not`` is the exact complement, so ``~Eq("score", 1)``
keeps documents without a score, as Django's ``~Q(score=1)`` keeps NULL rows.

Field names come from a :class:`FieldMap`. Without one, ``owner__name`` is ``owner.name``.
Built from a Document's mapping (what :class:`~datapipe_django.fetchers.SearchFetcher` does),
it picks each field's *exact-value* field for filters and sorts (a ``keyword`` sub-field of an
analyzed ``text`` field), its ``text`` field for ``q``, finds a foreign key stored as
``category``, ``category.id`` or ``category_id``, and knows each field's type, which decides how
cursor values and integer bounds are written. A filter the mapping cannot serve exactly (a
field that is only analyzed text, a normalised keyword, a field missing from the mapping)
raises :class:`NotSearchable`, so the search source declines the request instead of
answering it differently from the database.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import FieldError
from django.db import models
from django.utils import timezone

from datapipe_django.search.database import search_words
from datapipe_django.specs import (
    And,
    Contains,
    EndsWith,
    Eq,
    IEq,
    In,
    IsNull,
    MatchAll,
    MatchNone,
    Not,
    Or,
    Range,
    Spec,
    StartsWith,
    Uncompilable,
    _plan,
    _prepare,
)

if TYPE_CHECKING:
    from datapipe_django.paging import Ordering

__all__ = [
    "EngineField",
    "FieldMap",
    "NotSearchable",
    "compile_spec",
    "facet_aggregations",
    "facet_buckets",
    "highlight_clause",
    "multi_match",
    "search_after",
    "search_body",
    "sort_clause",
]

MATCH_ALL: dict[str, Any] = {"match_all": {}}
MATCH_NONE: dict[str, Any] = {"match_none": {}}

#: Integer field types and the values they hold (bounds outside are handled like Django).
INTEGER_RANGES = {
    "byte": (-(2**7), 2**7 - 1),
    "short": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "long": (-(2**63), 2**63 - 1),
    "unsigned_long": (0, 2**64 - 1),
}
FLOAT_TYPES = frozenset({"float", "half_float", "double", "scaled_float"})
KEYWORD_TYPES = frozenset({"keyword", "constant_keyword", "wildcard"})
TEXT_TYPES = frozenset({"text", "match_only_text", "search_as_you_type"})
CONTAINER_TYPES = frozenset({"object", "nested", "flattened"})

# What the engine reports as the sort value of a document without the field, with
# ``"missing": "_last"``: a cursor on such a row must send it back (``null`` is refused for
# numbers and dates). Measured on Elasticsearch 9.5 and 8.19.
_INT32 = (2**31 - 1, -(2**31))
_INT64 = (2**63 - 1, -(2**63))
_MISSING_LAST = {
    "byte": _INT32, "short": _INT32, "integer": _INT32,
    "long": _INT64, "date": _INT64, "boolean": _INT64, "unsigned_long": _INT64,
    "date_nanos": (2**63 - 1, 0),
    "float": ("Infinity", "-Infinity"), "half_float": ("Infinity", "-Infinity"),
    "double": ("Infinity", "-Infinity"), "scaled_float": ("Infinity", "-Infinity"),
}

# A guess of the engine type from the Django field, when no mapping is known.
_DJANGO_TYPES = {
    "AutoField": "integer", "SmallAutoField": "short", "BigAutoField": "long",
    "IntegerField": "integer", "PositiveIntegerField": "integer",
    "SmallIntegerField": "short", "PositiveSmallIntegerField": "short",
    "BigIntegerField": "long", "PositiveBigIntegerField": "long",
    "FloatField": "double", "DecimalField": "double", "BooleanField": "boolean",
    "DateTimeField": "date", "DateField": "date",
    "CharField": "keyword", "TextField": "keyword", "SlugField": "keyword",
    "EmailField": "keyword", "URLField": "keyword", "UUIDField": "keyword",
    "GenericIPAddressField": "ip",
}

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class NotSearchable(Uncompilable):
    """A spec, ordering or search cannot be expressed exactly on the engine.

    ``field`` is the field path concerned (or None). A :class:`SearchFetcher
    <datapipe_django.fetchers.SearchFetcher>` declines such a request, with ``reason``.
    """

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(None, reason)
        self.field = field

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class EngineField:
    """Where a Django field path lives in the engine: the (dotted) field name and its mapping
    type (``"keyword"``, ``"long"``, ``"date_nanos"``...; None when unknown)."""

    name: str
    type: str | None = None


def _flatten(properties: Mapping[str, Any], prefix: str = "", nested: bool = False,
             out: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """``{"owner": {"properties": {"name": ...}}}`` → ``{"owner": ..., "owner.name": ...}``,
    sub-fields (``fields``) included as ``name.sub``."""
    out = {} if out is None else out
    for name, spec in properties.items():
        full = f"{prefix}{name}"
        kind = spec.get("type") or ("object" if "properties" in spec else None)
        out[full] = {**spec, "type": kind, "_nested": nested}
        if "properties" in spec:
            _flatten(spec["properties"], f"{full}.", nested or kind == "nested", out)
        for sub, sub_spec in (spec.get("fields") or {}).items():
            out[f"{full}.{sub}"] = {**sub_spec, "type": sub_spec.get("type"),
                                    "_nested": nested, "_sub": True}
    return out


class FieldMap:
    """Field names and types of the engine's documents, for one model.

    ``mapping`` is a Document's mapping (``{"properties": {...}}``, as
    ``Document._doc_type.mapping.to_dict()`` gives it); ``model`` the Django model, used to
    find foreign keys and to prepare values exactly as ``Spec.matches()`` does; ``names``
    overrides the engine name of given paths (``{"owner__name": "owner_name"}``).
    """

    def __init__(self, mapping: Mapping[str, Any] | None = None, *,
                 model: type[models.Model] | None = None,
                 names: Mapping[str, str] | None = None,
                 normalizers: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.names = dict(names or {})
        self.normalizers = dict(normalizers or {})
        if mapping is not None and "properties" in mapping:
            mapping = mapping["properties"]
        self.flat: dict[str, dict[str, Any]] | None = (
            _flatten(mapping) if mapping is not None else None)

    @classmethod
    def coerce(cls, fields: Any, model: type[models.Model] | None = None) -> FieldMap:
        """A FieldMap from ``fields``: a FieldMap, a mapping of path → engine name, or None."""
        if isinstance(fields, FieldMap):
            return fields
        if fields is None:
            return cls(model=model)
        if isinstance(fields, Mapping):
            return cls(model=model, names=fields)
        raise TypeError(f"fields must be a FieldMap or a mapping of names, not {fields!r}.")

    # -- model side -----------------------------------------------------------------------
    def model_field(self, path: str) -> Any:
        """The model field whose values ``path`` compares (None without a model)."""
        if self.model is None:
            return None
        try:
            return _plan(self.model, path)[1]
        except FieldError:
            return None

    def prepare(self, path: str, lookup: str, value: Any) -> Any:
        """``value`` as the model field prepares it for ``lookup`` (as ``matches()`` does)."""
        field = self.model_field(path)
        return value if field is None else _prepare(field, lookup, value)

    def candidates(self, path: str) -> list[str]:
        """Engine names ``path`` may have, most likely first."""
        if path in self.names:
            return [self.names[path]]
        parts = path.split("__")
        if parts == ["pk"] and self.model is not None:
            parts = [self.model._meta.pk.name]  # type: ignore[union-attr]
        found = [".".join(parts)]
        if self.model is not None:
            try:
                steps, final = _plan(self.model, path)
            except FieldError:
                steps, final = (), None
            if steps and steps[-1].kind == "value" and steps[-1].name != steps[-1].attname:
                # The path reads a foreign key column: stored as the key itself, as an object
                # holding the related row's key, or under the column's name.
                prefix = "".join(f"{s.name}." for s in steps[:-1])
                last = steps[-1]
                related: Any = final
                target = related.target_field.name if getattr(related, "is_relation", False) \
                    else getattr(related, "name", "id")
                found += [f"{prefix}{last.name}", f"{prefix}{last.name}.{target}",
                          f"{prefix}{last.attname}"]
        return list(dict.fromkeys(found))

    def _guess_type(self, path: str) -> str | None:
        field = self.model_field(path)
        if field is None:
            return None
        if field.is_relation:
            field = getattr(field, "target_field", field)
        return _DJANGO_TYPES.get(field.get_internal_type())

    # -- engine side ----------------------------------------------------------------------
    def filter_field(self, path: str) -> EngineField:
        """The field exact filters and sorts use (a keyword sub-field of analyzed text)."""
        candidates = self.candidates(path)
        if self.flat is None:
            return EngineField(candidates[0], self._guess_type(path))
        text_only: str | None = None
        for name in candidates:
            spec = self.flat.get(name)
            if spec is None or spec["type"] in ("object", "flattened"):
                continue
            if spec["_nested"] or spec["type"] == "nested":
                raise NotSearchable(f"{name!r} is inside a nested field; the spec compiles to "
                                    f"plain queries only (map it as an object).", field=path)
            if spec["type"] in TEXT_TYPES:
                sub = _subfield(spec, KEYWORD_TYPES, plain=True)
                if sub is None:
                    text_only = text_only or name
                    continue
                name, spec = f"{name}.{sub[0]}", sub[1]
            if spec["type"] in KEYWORD_TYPES and spec.get("normalizer"):
                raise NotSearchable(
                    f"{name!r} is a keyword with the normalizer {spec['normalizer']!r}, so an "
                    f"exact filter on {path!r} would not be exact; map it without one.",
                    field=path)
            return EngineField(name, spec["type"])
        if text_only is not None:
            raise NotSearchable(
                f"{text_only!r} is analyzed text: give it a keyword sub-field to filter or sort "
                f"by {path!r} (e.g. fields={{'raw': KeywordField()}}).", field=path)
        raise NotSearchable(f"{path!r} is not in the Document's mapping (looked for "
                            f"{', '.join(map(repr, candidates))}).", field=path)

    def exists_field(self, path: str) -> EngineField:
        """The field an ``exists`` query checks (any indexed field, analyzed text included)."""
        try:
            return self.filter_field(path)
        except NotSearchable:
            if self.flat is None:
                raise
            for name in self.candidates(path):
                spec = self.flat.get(name)
                if spec is not None and spec["type"] in TEXT_TYPES and not spec["_nested"]:
                    return EngineField(name, spec["type"])
            raise

    def folding(self, normalizer: str | None) -> str | None:
        """``"lowercase"``/``"uppercase"`` when ``normalizer`` only folds case, else None."""
        if not normalizer:
            return None
        definition = self.normalizers.get(normalizer)
        if definition is None:
            return "lowercase" if normalizer == "lowercase" else None  # the built-in one
        if definition.get("char_filter") or definition.get("type", "custom") != "custom":
            return None
        filters = list(definition.get("filter") or [])
        return filters[0] if filters in (["lowercase"], ["uppercase"]) else None

    def folded_field(self, path: str) -> tuple[EngineField, str] | None:
        """A keyword field of ``path`` whose normalizer folds case (what case-insensitive
        lookups use), with the folding; None when the mapping has none."""
        if self.flat is None:
            return None
        for name in self.candidates(path):
            spec = self.flat.get(name)
            if spec is None or spec["_nested"]:
                continue
            options = [(name, spec)] + [(f"{name}.{sub}", sub_spec) for sub, sub_spec in
                                        (spec.get("fields") or {}).items()]
            for full, option in options:
                kind = self.folding(option.get("normalizer"))
                if option.get("type") in KEYWORD_TYPES and kind is not None:
                    return EngineField(full, option["type"]), kind
        return None

    def search_field(self, path: str) -> str:
        """The field ``q`` searches: analyzed text (a text sub-field of a keyword)."""
        candidates = self.candidates(path)
        if self.flat is None:
            return candidates[0]
        for name in candidates:
            spec = self.flat.get(name)
            if spec is None or spec["type"] in CONTAINER_TYPES or spec["_nested"]:
                continue
            if spec["type"] in TEXT_TYPES:
                return name
            sub = _subfield(spec, TEXT_TYPES)
            return f"{name}.{sub[0]}" if sub is not None else name
        raise NotSearchable(f"search field {path!r} is not in the Document's mapping (looked "
                            f"for {', '.join(map(repr, candidates))}).", field=path)


def _subfield(spec: Mapping[str, Any], types: Iterable[str], *,
              plain: bool = False) -> tuple[str, dict[str, Any]] | None:
    """The first sub-field of ``spec`` of one of ``types`` (``plain``: without normalizer
    first)."""
    subs = [(name, sub) for name, sub in (spec.get("fields") or {}).items()
            if sub.get("type") in types]
    if plain:
        subs.sort(key=lambda pair: bool(pair[1].get("normalizer")))
    return subs[0] if subs else None


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------

def _aware(value: dt.datetime) -> dt.datetime:
    if timezone.is_naive(value):
        tz = timezone.get_default_timezone() if settings.USE_TZ else dt.UTC
        return timezone.make_aware(value, tz)
    return value


def to_json(value: Any, kind: str | None = None) -> Any:
    """A query value as JSON: ISO dates (aware; naive ones are in the default time zone),
    keys of model instances, strings of UUIDs, numbers for decimals on number fields."""
    if isinstance(value, models.Model):
        value = value.pk
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        if kind in KEYWORD_TYPES:
            return str(value)
        if value == value.to_integral_value() and kind not in FLOAT_TYPES:
            return int(value)
        return float(value)
    if isinstance(value, dt.datetime):
        return _aware(value).isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v, kind) for v in value]
    return value


def _fits(value: Any, kind: str | None) -> bool:
    """Whether ``value`` can be stored in an integer field of ``kind`` (True otherwise)."""
    bounds = INTEGER_RANGES.get(kind or "")
    if bounds is None or not isinstance(value, int | float) or isinstance(value, bool):
        return True
    return bounds[0] <= value <= bounds[1]


def _epoch_units(value: dt.datetime | dt.date, per_second: int) -> int:
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    delta = _aware(value) - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return micros * per_second // 1_000_000  # floor, as the engine truncates to its unit


def _cursor_value(value: Any, kind: str | None, descending: bool) -> Any:
    """An ordering value as ``search_after`` wants it: the engine's own sort value."""
    if value is None:
        if kind in _MISSING_LAST:
            return _MISSING_LAST[kind][1 if descending else 0]
        return None  # keyword, ip: the engine reports (and accepts) null
    if isinstance(value, dt.date) and kind in ("date", "date_nanos", None):
        return _epoch_units(value, 1_000_000_000 if kind == "date_nanos" else 1_000)
    if isinstance(value, bool):
        return int(value) if kind == "boolean" else value
    return to_json(value, kind)


# --------------------------------------------------------------------------------------------
# Spec → query
# --------------------------------------------------------------------------------------------

def compile_spec(spec: Spec, *, fields: Any = None,
                 model: type[models.Model] | None = None) -> dict[str, Any]:
    """``spec`` as an Elasticsearch/OpenSearch query (see the module docstring).

    ``fields``: a :class:`FieldMap` or a mapping of path → engine name; ``model`` prepares
    values with the model fields. Raises :class:`NotSearchable` for a spec the engine
    cannot evaluate exactly.
    """
    field_map = FieldMap.coerce(fields, model)
    return _Compiler(field_map).compile(spec)


class _Compiler:
    def __init__(self, fields: FieldMap) -> None:
        self.fields = fields

    def compile(self, spec: Spec) -> dict[str, Any]:
        method = getattr(self, f"_{type(spec).__name__}", None)
        if method is not None:
            return method(spec)  # type: ignore[no-any-return]
        for cls in type(spec).__mro__[1:]:  # a subclass of a known node
            method = getattr(self, f"_{cls.__name__}", None)
            if method is not None and cls.__module__ == Spec.__module__:
                return method(spec)  # type: ignore[no-any-return]
        if type(spec).to_search is not Spec.to_search:  # a custom node that compiles itself
            return spec.to_search(self.fields, model=self.fields.model)
        raise NotSearchable(f"{type(spec).__name__} has no search compilation; implement "
                            f"to_search() on it.")

    # -- constants and composites -------------------------------------------------------
    def _MatchAll(self, spec: MatchAll) -> dict[str, Any]:
        return dict(MATCH_ALL)

    def _MatchNone(self, spec: MatchNone) -> dict[str, Any]:
        return dict(MATCH_NONE)

    def _And(self, spec: And) -> dict[str, Any]:
        parts = []
        for child in spec.children:
            query = self.compile(child)
            if query == MATCH_NONE:
                return dict(MATCH_NONE)
            if query != MATCH_ALL:
                parts.append(query)
        if not parts:
            return dict(MATCH_ALL)
        return parts[0] if len(parts) == 1 else {"bool": {"filter": parts}}

    def _Or(self, spec: Or) -> dict[str, Any]:
        parts = []
        for child in spec.children:
            query = self.compile(child)
            if query == MATCH_ALL:
                return dict(MATCH_ALL)
            if query != MATCH_NONE:
                parts.append(query)
        if not parts:
            return dict(MATCH_NONE)
        if len(parts) == 1:
            return parts[0]
        return {"bool": {"should": parts, "minimum_should_match": 1}}

    def _Not(self, spec: Not) -> dict[str, Any]:
        query = self.compile(spec.child)
        if query == MATCH_ALL:
            return dict(MATCH_NONE)
        if query == MATCH_NONE:
            return dict(MATCH_ALL)
        inner = query.get("bool", {})
        if list(query) == ["bool"] and list(inner) == ["must_not"] and len(inner["must_not"]) == 1:
            return inner["must_not"][0]  # ~~x is x
        return {"bool": {"must_not": [query]}}

    # -- leaves -----------------------------------------------------------------------------
    def _Eq(self, spec: Eq) -> dict[str, Any]:
        if spec.value is None:
            return self._IsNull(IsNull(spec.field, True))
        target = self.fields.filter_field(spec.field)
        value = to_json(self.fields.prepare(spec.field, "exact", spec.value), target.type)
        if value is None:
            return self._IsNull(IsNull(spec.field, True))
        if not _fits(value, target.type):
            return dict(MATCH_NONE)
        return {"term": {target.name: value}}

    def _IEq(self, spec: IEq) -> dict[str, Any]:
        if spec.value is None:
            return self._IsNull(IsNull(spec.field, True))
        target, extra = self._insensitive(spec.field, "iexact", str(spec.value))
        return {"term": {target.name: {"value": str(spec.value), **extra}}}

    def _In(self, spec: In) -> dict[str, Any]:
        values = [v for v in spec.values if v is not None]
        if not values:
            return dict(MATCH_NONE)
        target = self.fields.filter_field(spec.field)
        prepared = self.fields.prepare(spec.field, "in", values)
        wanted = [to_json(v, target.type) for v in prepared if v is not None]
        wanted = list(dict.fromkeys(v for v in wanted if _fits(v, target.type)))
        if not wanted:
            return dict(MATCH_NONE)
        return {"terms": {target.name: wanted}}

    def _Range(self, spec: Range) -> dict[str, Any]:
        target = self.fields.filter_field(spec.field)
        low, high = INTEGER_RANGES.get(target.type or "", (None, None))
        bounds: dict[str, Any] = {}
        for name, raw in spec.bounds().items():
            value = to_json(self.fields.prepare(spec.field, name, raw), target.type)
            if low is not None and isinstance(value, int | float) \
                    and not isinstance(value, bool):
                lower = name in ("gt", "gte")
                if (value < low if lower else value > high):  # type: ignore[operator]
                    continue  # every stored value is past this bound (Django drops it too)
                if (value > high if lower else value < low):  # type: ignore[operator]
                    return dict(MATCH_NONE)  # no stored value can be past this bound
            bounds[name] = value
        if not bounds:  # only "has a value" is left: a range never matches a missing value
            return {"exists": {"field": target.name}}
        return {"range": {target.name: bounds}}

    def _IsNull(self, spec: IsNull) -> dict[str, Any]:
        target = self.fields.exists_field(spec.field)
        exists = {"exists": {"field": target.name}}
        return {"bool": {"must_not": [exists]}} if spec.value else exists

    def _text_target(self, path: str, lookup: str) -> EngineField:
        target = self.fields.filter_field(path)
        if target.type is not None and target.type not in KEYWORD_TYPES:
            raise NotSearchable(f"the text lookup {lookup!r} on {path!r} needs a keyword "
                                f"field; {target.name!r} is {target.type!r}.", field=path)
        return target

    def _insensitive(self, path: str, lookup: str,
                     text: str) -> tuple[EngineField, dict[str, Any]]:
        """The field and options of a case-insensitive lookup that folds like PostgreSQL's
        ``UPPER()``: a keyword with a case-folding normalizer (Unicode), else
        ``case_insensitive`` (ASCII letters only: a value with other cased letters is not
        searchable exactly)."""
        folded = self.fields.folded_field(path)
        if folded is not None:
            target, kind = folded
            odd = [c for c in text if ord(c) > 127 and c in _fold_trouble()
                   ] if kind == "lowercase" else []
            if odd:
                raise NotSearchable(
                    f"the case-insensitive {lookup!r} of {text!r} on {path!r}: {odd[0]!r} folds "
                    f"differently in lower case (the normalizer) than in PostgreSQL's "
                    f"UPPER().", field=path)
            return target, {}
        target = self._text_target(path, lookup)
        odd = [c for c in text if ord(c) > 127 and c.upper() != c.lower()]
        if odd:
            raise NotSearchable(
                f"the case-insensitive {lookup!r} of {text!r} on {path!r}: the engine's "
                f"case_insensitive folds ASCII letters only, not {odd[0]!r}; give the field "
                f"a keyword sub-field with a lowercase normalizer.", field=path)
        return target, {"case_insensitive": True}

    def _pattern(self, spec: Any, kind: str, value: str) -> dict[str, Any]:
        if spec.value is None:
            raise ValueError("Cannot use None as a query value")
        if spec.case_insensitive:
            target, extra = self._insensitive(spec.field, spec.lookup, str(spec.value))
        else:
            target, extra = self._text_target(spec.field, spec.lookup), {}
        return {kind: {target.name: {"value": value, **extra}}}

    def _Contains(self, spec: Contains) -> dict[str, Any]:
        return self._pattern(spec, "wildcard", f"*{_escape(str(spec.value))}*")

    def _StartsWith(self, spec: StartsWith) -> dict[str, Any]:
        return self._pattern(spec, "prefix", str(spec.value) if spec.value is not None else "")

    def _EndsWith(self, spec: EndsWith) -> dict[str, Any]:
        return self._pattern(spec, "wildcard", f"*{_escape(str(spec.value))}")


@functools.cache
def _fold_trouble() -> frozenset[str]:
    """Non-ASCII letters for which "same lower case" (a lowercase normalizer, one character
    at a time) and "same upper case" (PostgreSQL's ``UPPER()``) disagree with some other
    letter: dotless and dotted i (with ``i``/``I``), sharp s, final sigma, the Kelvin
    sign... A case-insensitive lookup of a value holding one is not exact on the engine.
    (A stored value holding one can still differ from the database for an ASCII query; see
    docs/search.md.)"""
    from datapipe_django.specs import _pg_upper

    lower_of: dict[str, str] = {}
    by_lower: dict[str, set[str]] = {}
    by_upper: dict[str, set[str]] = {}
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        lower = char.lower()[0]  # the simple mapping: "İ".lower() is "i" + a combining dot
        lower_of[char] = lower
        by_lower.setdefault(lower, set()).add(char)
        by_upper.setdefault(_pg_upper(char), set()).add(char)
    trouble: set[str] = set()
    for group in by_lower.values():
        if len({_pg_upper(c) for c in group}) > 1:
            trouble |= group
    for group in by_upper.values():
        if len({lower_of[c] for c in group}) > 1:
            trouble |= group
    return frozenset(c for c in trouble if ord(c) > 127)


def _escape(text: str) -> str:
    """``text`` literal inside a wildcard pattern."""
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")


# --------------------------------------------------------------------------------------------
# Ordering, cursors, the whole body
# --------------------------------------------------------------------------------------------

def sort_clause(ordering: Ordering, fields: Any = None) -> list[dict[str, Any]]:
    """The total ordering as ``sort``: missing values last in both directions (our NULLS
    LAST), the primary key last (it must be a mapped field: sorting by ``_id`` is off). A
    relevance ordering sorts by ``_score``, best first, then the pk ascending."""
    field_map = FieldMap.coerce(fields, ordering.model)
    clause = [
        {field_map.filter_field(f.name).name: {"order": "desc" if f.descending else "asc",
                                                "missing": "_last"}}
        for f in ordering.fields[1 if ordering.relevance else 0:]
    ]
    return [{"_score": {"order": "desc"}}, *clause] if ordering.relevance else clause


def search_after(ordering: Ordering, values: Sequence[Any], fields: Any = None) -> list[Any]:
    """A cursor's ordering values as ``search_after``: dates as epoch milliseconds (``date``)
    or nanoseconds (``date_nanos``), booleans as 0/1, a missing value as the engine's own
    sort value for it; a relevance cursor's score as it is."""
    field_map = FieldMap.coerce(fields, ordering.model)
    start = 1 if ordering.relevance else 0
    rest = [
        _cursor_value(value, field_map.filter_field(f.name).type, f.descending)
        for f, value in zip(ordering.fields[start:], values[start:], strict=True)
    ]
    return [float(values[0]), *rest] if ordering.relevance else rest


def multi_match(text: str, fields: Sequence[str], *,
                fuzziness: str | int | None = None) -> dict[str, Any]:
    """``q``: every word must occur in one of ``fields`` (words as the analyzer cuts them).

    With ``fuzziness`` (``"AUTO"``: one edit for words of 3 to 5 letters, two beyond; or a
    number of edits), a word matches a word that many edits away: each whitespace-separated
    word becomes a fuzzy ``multi_match`` of its own (``cross_fields``, which takes no
    fuzziness, is what they replace), all of which must match."""
    if fuzziness in (None, 0):
        return {"multi_match": {"query": text, "fields": list(fields), "type": "cross_fields",
                                "operator": "and", "lenient": True}}
    per_word = [{"multi_match": {"query": word, "fields": list(fields), "type": "best_fields",
                                 "operator": "and", "fuzziness": fuzziness,
                                 "prefix_length": 0, "lenient": True}}
                for word in search_words(text)]
    return per_word[0] if len(per_word) == 1 else {"bool": {"must": per_word}}


#: What the engine puts around a highlighted match (its ``html`` encoder escapes the rest).
HIGHLIGHT_TAGS = ("<em>", "</em>")


def highlight_clause(search_fields: Sequence[str]) -> dict[str, Any]:
    """``highlight`` over the engine's ``search_fields``: up to three fragments of about 100
    characters per field, matches in ``<em>``, the text HTML-escaped (``encoder: html``)."""
    return {"pre_tags": [HIGHLIGHT_TAGS[0]], "post_tags": [HIGHLIGHT_TAGS[1]],
            "encoder": "html", "number_of_fragments": 3, "fragment_size": 100,
            "require_field_match": True,
            "fields": {name: {} for name in dict.fromkeys(search_fields)}}


def facet_aggregations(facets: Sequence[str], fields: FieldMap, *,
                       size: int) -> dict[str, Any]:
    """One ``terms`` aggregation per facet: the ``size`` most frequent values over every hit
    (not the page), ties by value; documents without a value are not counted. A date facet
    reads its buckets as ISO dates; a datetime one is not searchable."""
    aggs: dict[str, Any] = {}
    for name in facets:
        target = fields.filter_field(name)
        model_field = fields.model_field(name)
        terms: dict[str, Any] = {"field": target.name, "size": size,
                                 "order": [{"_count": "desc"}, {"_key": "asc"}]}
        if isinstance(model_field, models.DateTimeField):
            raise NotSearchable(f"facet {name!r} is a datetime: count a date or a keyword.",
                                field=name)
        if target.type in ("date", "date_nanos"):
            terms["format"] = "yyyy-MM-dd"
        aggs[name] = {"terms": terms}
    return aggs


def facet_buckets(response: Mapping[str, Any], facets: Sequence[str],
                  fields: FieldMap) -> dict[str, list[tuple[Any, int]]]:
    """The facets' buckets of a search response as ``{name: [(value, count), ...]}``, each
    value as the model field holds it (a foreign key's id, a boolean, a date)."""
    found: dict[str, list[tuple[Any, int]]] = {}
    aggregations = response.get("aggregations") or {}
    for name in facets:
        field = fields.model_field(name)
        if field is not None and field.is_relation:
            field = field.target_field
        buckets = (aggregations.get(name) or {}).get("buckets") or []
        found[name] = [
            (_bucket_value(bucket, field), int(bucket["doc_count"])) for bucket in buckets]
    return found


def _bucket_value(bucket: Mapping[str, Any], field: Any) -> Any:
    # Dates are read from their formatted key; booleans from theirs (0/1); the rest as is.
    dated = isinstance(field, models.DateField) and "key_as_string" in bucket
    raw = bucket["key_as_string"] if dated else bucket["key"]
    return raw if field is None else field.to_python(raw)


def search_body(
    *,
    spec: Spec | None,
    size: int,
    ordering: Ordering | None = None,
    fields: Any = None,
    model: type[models.Model] | None = None,
    offset: int = 0,
    after: Sequence[Any] | None = None,
    search: str | None = None,
    search_fields: Sequence[str] = (),
    search_query: Mapping[str, Any] | None = None,
    pk: Any = None,
    track_total_hits: bool | int = False,
    source: Any = True,
    timeout: float | None = None,
    fuzziness: str | int | None = None,
    highlight: bool = False,
    facets: Sequence[str] = (),
    facet_size: int = 50,
) -> dict[str, Any]:
    """The whole search request: ``spec`` (tenant filter included by the caller) as a
    non-scoring filter, ``search`` as a ``multi_match`` over ``search_fields`` (or
    ``search_query``; ``fuzziness`` tolerates typos), the ordering as ``sort`` (``_score``
    first for a relevance ordering), ``offset`` as ``from`` or the cursor ``after`` as
    ``search_after``, ``timeout`` (seconds) as the engine's own timeout, ``highlight`` as a
    ``highlight`` of the search fields and ``facets`` as ``terms`` aggregations."""
    if model is None and ordering is not None:
        model = ordering.model
    field_map = FieldMap.coerce(fields, model)
    if after is not None and offset:
        raise ValueError("search_after pages start at the cursor: offset must be 0.")
    filters = []
    if spec is not None:
        compiled = _Compiler(field_map).compile(spec)
        inner = compiled.get("bool", {})
        if list(compiled) == ["bool"] and list(inner) == ["filter"]:
            filters.extend(inner["filter"])  # an And: its parts are filters of their own
        elif compiled != MATCH_ALL:
            filters.append(compiled)
    if pk is not None:
        filters.append({"ids": {"values": [str(pk)]}})
    must = []
    engine_fields = [field_map.search_field(p) for p in search_fields] if search else []
    if search:
        must.append(dict(search_query) if search_query is not None else
                    multi_match(search, engine_fields, fuzziness=fuzziness))
    if not filters and not must:
        query: dict[str, Any] = dict(MATCH_ALL)
    else:
        query = {"bool": {}}
        if filters:
            query["bool"]["filter"] = filters
        if must:
            query["bool"]["must"] = must
    body: dict[str, Any] = {"query": query, "size": size,
                            "track_total_hits": track_total_hits, "_source": source}
    if ordering is not None:
        body["sort"] = sort_clause(ordering, field_map)
        if after is not None:
            body["search_after"] = search_after(ordering, after, field_map)
    if offset:
        body["from"] = offset
    if highlight and search:
        body["highlight"] = highlight_clause(engine_fields)
    if facets:
        body["aggs"] = facet_aggregations(facets, field_map, size=facet_size)
    if timeout is not None:
        body["timeout"] = f"{max(1, int(timeout * 1000))}ms"
    return body
