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

Field names come from a :class:`~datapipe_django.specs.fieldmap.FieldMap` (a Document's
mapping read once: which engine field serves a path, and its type); a filter it cannot serve
exactly raises :class:`~datapipe_django.specs.fieldmap.NotSearchable`.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import uuid
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from datapipe_django.specs.fieldmap import (
    CONTAINER_TYPES,
    FLOAT_TYPES,
    INTEGER_RANGES,
    KEYWORD_TYPES,
    TEXT_TYPES,
    EngineField,
    FieldMap,
    NotSearchable,
)
from datapipe_django.specs.memory import pg_upper
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
