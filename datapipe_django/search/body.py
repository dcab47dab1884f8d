"""The whole search request body: a spec (compiled by :mod:`datapipe_django.specs.search`),
``q`` as a ``multi_match``, the ordering as ``sort``, an offset or a cursor, highlight and
facets (plain dicts, no search client).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.db import models

from datapipe_django.search.database import search_words
from datapipe_django.specs import Spec
from datapipe_django.specs.search import (
    MATCH_ALL,
    FieldMap,
    NotSearchable,
    aware,
    compile_spec,
    to_json,
)

if TYPE_CHECKING:
    from datapipe_django.paging import Ordering

__all__ = [
    "HIGHLIGHT_TAGS",
    "facet_aggregations",
    "facet_buckets",
    "highlight_clause",
    "multi_match",
    "search_after",
    "search_body",
    "sort_clause",
]


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


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _epoch_units(value: dt.datetime | dt.date, per_second: int) -> int:
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    delta = aware(value) - _EPOCH
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
    field_map = FieldMap.coerce(fields, model if model is not None else
                                getattr(ordering, "model", None))
    if after is not None and offset:
        raise ValueError("search_after pages start at the cursor: offset must be 0.")
    engine_fields = [field_map.search_field(p) for p in search_fields] if search else []
    must = _scoring(search, engine_fields, search_query, fuzziness)
    body: dict[str, Any] = {"query": _query(_filters(spec, pk, field_map), must), "size": size,
                            "track_total_hits": track_total_hits, "_source": source}
    if ordering is not None:
        body.update(_sorting(ordering, after, field_map))
    if offset:
        body["from"] = offset
    if highlight and search:
        body["highlight"] = highlight_clause(engine_fields)
    body.update(_aggregations_and_timeout(facets, field_map, facet_size, timeout))
    return body


def _aggregations_and_timeout(facets: Sequence[str], field_map: FieldMap, facet_size: int,
                              timeout: float | None) -> dict[str, Any]:
    """``aggs`` for the facets, and the engine's own ``timeout`` (milliseconds, at least 1)."""
    extra: dict[str, Any] = {}
    if facets:
        extra["aggs"] = facet_aggregations(facets, field_map, size=facet_size)
    if timeout is not None:
        extra["timeout"] = f"{max(1, int(timeout * 1000))}ms"
    return extra


def _scoring(search: str | None, engine_fields: list[str],
             search_query: Mapping[str, Any] | None,
             fuzziness: str | int | None) -> list[dict[str, Any]]:
    """The scoring clauses of ``q``: the caller's ``search_query``, or a ``multi_match``."""
    if not search:
        return []
    if search_query is not None:
        return [dict(search_query)]
    return [multi_match(search, engine_fields, fuzziness=fuzziness)]


def _filters(spec: Spec | None, pk: Any, field_map: FieldMap) -> list[dict[str, Any]]:
    """The non-scoring filters: the spec (an And's parts each on their own) and the pk."""
    filters = []
    if spec is not None:
        compiled = compile_spec(spec, fields=field_map)
        inner = compiled.get("bool", {})
        if list(compiled) == ["bool"] and list(inner) == ["filter"]:
            filters.extend(inner["filter"])  # an And: its parts are filters of their own
        elif compiled != MATCH_ALL:
            filters.append(compiled)
    if pk is not None:
        filters.append({"ids": {"values": [str(pk)]}})
    return filters


def _query(filters: list[dict[str, Any]], must: list[dict[str, Any]]) -> dict[str, Any]:
    """``match_all``, or a ``bool`` of the filters and the scoring ``must`` clauses."""
    if not filters and not must:
        return dict(MATCH_ALL)
    query: dict[str, Any] = {}
    if filters:
        query["filter"] = filters
    if must:
        query["must"] = must
    return {"bool": query}


def _sorting(ordering: Ordering, after: Sequence[Any] | None,
             field_map: FieldMap) -> dict[str, Any]:
    """``sort`` for the ordering, and ``search_after`` for a cursor."""
    clause: dict[str, Any] = {"sort": sort_clause(ordering, field_map)}
    if after is not None:
        clause["search_after"] = search_after(ordering, after, field_map)
    return clause
