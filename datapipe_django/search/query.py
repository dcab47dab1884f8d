"""Kept for one release: the search compilation moved to :mod:`datapipe_django.specs.search`
and the request body to :mod:`datapipe_django.search.body`; import them from there."""

from datapipe_django.search.body import (
    HIGHLIGHT_TAGS,
    facet_aggregations,
    facet_buckets,
    highlight_clause,
    multi_match,
    search_after,
    search_body,
    sort_clause,
)
from datapipe_django.specs.search import (
    CONTAINER_TYPES,
    FLOAT_TYPES,
    INTEGER_RANGES,
    KEYWORD_TYPES,
    MATCH_ALL,
    MATCH_NONE,
    TEXT_TYPES,
    EngineField,
    FieldMap,
    NotSearchable,
    compile_spec,
    to_json,
)

__all__ = [
    "CONTAINER_TYPES",
    "FLOAT_TYPES",
    "HIGHLIGHT_TAGS",
    "INTEGER_RANGES",
    "KEYWORD_TYPES",
    "MATCH_ALL",
    "MATCH_NONE",
    "TEXT_TYPES",
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
    "to_json",
]
