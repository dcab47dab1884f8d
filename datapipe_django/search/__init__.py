"""Search-engine integration: Elasticsearch and OpenSearch, through their Django Document
libraries (django-elasticsearch-dsl, django-opensearch-dsl).

::

    search/
    ├── query.py      specs, orderings and requests → query bodies (plain dicts, no client)
    ├── documents.py  one adapter over an ES or OpenSearch Document class: mapping, client,
    │                 errors that mean "engine unavailable", bulk
    ├── sync.py       index updates on transaction commit, in bulk; outages recorded
    ├── indexing.py   rebuild an index from a database alias; re-index what is pending
    └── database.py   PostgreSQL full-text search, the database fallback for ``q``

The fetcher is :class:`datapipe_django.fetchers.SearchFetcher`. Only ``documents.py``,
``sync.py`` and ``indexing.py`` import a search client, and only when they are called: this
package (and :meth:`datapipe_django.specs.Spec.to_search`) imports without one.
"""

from datapipe_django.search.query import (
    EngineField,
    FieldMap,
    NotSearchable,
    compile_spec,
    search_after,
    search_body,
    sort_clause,
)

__all__ = [
    "EngineField",
    "FieldMap",
    "NotSearchable",
    "compile_spec",
    "search_after",
    "search_body",
    "sort_clause",
]
