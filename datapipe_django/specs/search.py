"""The search compilation: a :class:`~datapipe_django.specs.Spec` as an Elasticsearch/OpenSearch
query (plain dicts, JSON-ready; no search client is imported).

The request body around it (ordering, cursor, ``q``, highlight, facets) is
:mod:`datapipe_django.search.body`. The same
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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import FieldError
from django.db import models
from django.utils import timezone

from datapipe_django.specs.memory import pg_upper, prepare
from datapipe_django.specs.paths import resolve
from datapipe_django.specs.tree import (
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
)

__all__ = [
    "CONTAINER_TYPES",
    "FLOAT_TYPES",
    "INTEGER_RANGES",
    "KEYWORD_TYPES",
    "MATCH_ALL",
    "MATCH_NONE",
    "TEXT_TYPES",
    "EngineField",
    "FieldMap",
    "NotSearchable",
    "aware",
    "compile_spec",
    "to_json",
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
            return resolve(self.model, path)[1]
        except FieldError:
            return None

    def prepare(self, path: str, lookup: str, value: Any) -> Any:
        """``value`` as the model field prepares it for ``lookup`` (as ``matches()`` does)."""
        field = self.model_field(path)
        return value if field is None else prepare(field, lookup, value)

    def candidates(self, path: str) -> list[str]:
        """Engine names ``path`` may have, most likely first."""
        if path in self.names:
            return [self.names[path]]
        parts = path.split("__")
        if parts == ["pk"] and self.model is not None:
            parts = [self.model._meta.pk.name]  # type: ignore[union-attr]
        found = [".".join(parts), *self._key_candidates(path)]
        return list(dict.fromkeys(found))

    def _key_candidates(self, path: str) -> list[str]:
        """Where a path that reads a foreign key column may be stored: as the key itself, as
        an object holding the related row's key, or under the column's name."""
        if self.model is None:
            return []
        try:
            steps, final = resolve(self.model, path)
        except FieldError:
            return []
        if not steps or steps[-1].kind != "value" or steps[-1].name == steps[-1].attname:
            return []
        prefix = "".join(f"{s.name}." for s in steps[:-1])
        last = steps[-1]
        related: Any = final
        target = related.target_field.name if getattr(related, "is_relation", False) \
            else getattr(related, "name", "id")
        return [f"{prefix}{last.name}", f"{prefix}{last.name}.{target}",
                f"{prefix}{last.attname}"]

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
            found = _exact_field(path, name, spec)
            if found is not None:
                return found
            text_only = text_only or name
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


def _exact_field(path: str, name: str, spec: Mapping[str, Any]) -> EngineField | None:
    """The exact-value field of the mapped field ``name`` (itself, or the keyword sub-field of
    analyzed text); None when it is analyzed text only. Raises :class:`NotSearchable` for a
    field inside a nested one and for a normalised keyword."""
    if spec["_nested"] or spec["type"] == "nested":
        raise NotSearchable(f"{name!r} is inside a nested field; the spec compiles to "
                            f"plain queries only (map it as an object).", field=path)
    if spec["type"] in TEXT_TYPES:
        sub = _subfield(spec, KEYWORD_TYPES, plain=True)
        if sub is None:
            return None
        name, spec = f"{name}.{sub[0]}", sub[1]
    if spec["type"] in KEYWORD_TYPES and spec.get("normalizer"):
        raise NotSearchable(
            f"{name!r} is a keyword with the normalizer {spec['normalizer']!r}, so an "
            f"exact filter on {path!r} would not be exact; map it without one.",
            field=path)
    return EngineField(name, spec["type"])


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

def aware(value: dt.datetime) -> dt.datetime:
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
    for types, convert in _TO_JSON:
        if isinstance(value, types):
            return convert(value, kind)
    return value


def _decimal_json(value: Decimal, kind: str | None) -> Any:
    if kind in KEYWORD_TYPES:
        return str(value)
    if value == value.to_integral_value() and kind not in FLOAT_TYPES:
        return int(value)
    return float(value)


def _datetime_json(value: dt.datetime, kind: str | None) -> str:
    return aware(value).isoformat()


def _iso_json(value: dt.date | dt.time, kind: str | None) -> str:
    return value.isoformat()


def _duration_json(value: dt.timedelta, kind: str | None) -> int:
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


def _str_json(value: Any, kind: str | None) -> str:
    return str(value)


def _each_json(value: Iterable[Any], kind: str | None) -> list[Any]:
    return [to_json(v, kind) for v in value]


# Checked in order: a datetime is also a date.
_TO_JSON: tuple[tuple[Any, Callable[[Any, str | None], Any]], ...] = (
    (Decimal, _decimal_json),
    (dt.datetime, _datetime_json),
    (dt.date | dt.time, _iso_json),
    (dt.timedelta, _duration_json),
    (uuid.UUID, _str_json),
    (list | tuple | set | frozenset, _each_json),
)


def _fits(value: Any, kind: str | None) -> bool:
    """Whether ``value`` can be stored in an integer field of ``kind`` (True otherwise)."""
    bounds = INTEGER_RANGES.get(kind or "")
    if bounds is None or not isinstance(value, int | float) or isinstance(value, bool):
        return True
    return bounds[0] <= value <= bounds[1]



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
        bounds: dict[str, Any] = {}
        for name, raw in spec.bounds().items():
            value = to_json(self.fields.prepare(spec.field, name, raw), target.type)
            verdict = _bound_verdict(name, value, target.type)
            if verdict == "none":
                return dict(MATCH_NONE)  # no stored value can be past this bound
            if verdict == "keep":
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
            odd = _lowercase_trouble(text) if kind == "lowercase" else []
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


def _bound_verdict(name: str, value: Any, kind: str | None) -> str:
    """What a range bound does on an integer field of ``kind``: ``"keep"`` it, ``"drop"`` it
    (every stored value is past it: Django drops it too) or match ``"none"`` (no stored value
    can be past it). Only numbers on integer fields are ever dropped."""
    low, high = INTEGER_RANGES.get(kind or "", (None, None))
    if low is None or high is None or not isinstance(value, int | float) \
            or isinstance(value, bool):
        return "keep"
    lower = name in ("gt", "gte")
    if (value < low if lower else value > high):
        return "drop"
    if (value > high if lower else value < low):
        return "none"
    return "keep"


def _lowercase_trouble(text: str) -> list[str]:
    """The characters of ``text`` a lowercase normalizer folds unlike ``UPPER()``."""
    trouble = _fold_trouble()
    return [c for c in text if ord(c) > 127 and c in trouble]


@functools.cache
def _fold_trouble() -> frozenset[str]:
    """Non-ASCII letters for which "same lower case" (a lowercase normalizer, one character
    at a time) and "same upper case" (PostgreSQL's ``UPPER()``) disagree with some other
    letter: dotless and dotted i (with ``i``/``I``), sharp s, final sigma, the Kelvin
    sign... A case-insensitive lookup of a value holding one is not exact on the engine.
    (A stored value holding one can still differ from the database for an ASCII query; see
    docs/search.md.)"""
    # the simple mapping: "İ".lower() is "i" + a combining dot
    lower_of = {char: char.lower()[0] for char in _bmp_characters()}
    upper_of = {char: pg_upper(char) for char in lower_of}
    trouble = _disagreeing(lower_of, upper_of) | _disagreeing(upper_of, lower_of)
    return frozenset(c for c in trouble if ord(c) > 127)


def _bmp_characters() -> list[str]:
    return [chr(code) for code in range(0x10000) if not 0xD800 <= code <= 0xDFFF]


def _disagreeing(fold: Mapping[str, str], other: Mapping[str, str]) -> set[str]:
    """The characters of every group that ``fold`` makes equal and ``other`` does not."""
    groups: dict[str, set[str]] = {}
    for char, folded in fold.items():
        groups.setdefault(folded, set()).add(char)
    found: set[str] = set()
    for group in groups.values():
        if len({other[c] for c in group}) > 1:
            found |= group
    return found


def _escape(text: str) -> str:
    """``text`` literal inside a wildcard pattern."""
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")
