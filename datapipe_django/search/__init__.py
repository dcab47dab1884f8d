"""Search-engine integration: Elasticsearch and OpenSearch, through their Django Document
libraries (django-elasticsearch-dsl, django-opensearch-dsl).

::

    search/
    ├── body.py       whole request bodies: spec, ``q``, ordering, cursor, highlight, facets
    │                 (plain dicts, no client; the spec itself compiles in specs/search.py)
    ├── query.py      kept for one release: re-exports of body.py and specs/search.py
    ├── documents.py  one adapter over an ES or OpenSearch Document class: mapping, client,
    │                 errors that mean "engine unavailable", bulk
    ├── sync.py       index updates on transaction commit, in bulk; outages recorded
    ├── indexing.py   rebuild an index from a database alias; re-index what is pending
    ├── fields.py     ``DateNanosField`` (datetimes with microseconds) for both libraries
    └── database.py   PostgreSQL full-text search, the database fallback for ``q``

The fetcher is :class:`datapipe_django.fetchers.SearchFetcher`, the command ``manage.py
datapipe_index``, the model of rows to re-index :class:`datapipe_django.models.PendingIndex`.
No module here imports a search client at import time (``documents.py`` imports one to
classify an error, ``fields.py`` when a field class is first used): this package and
:meth:`datapipe_django.specs.Spec.to_search` work without one. See docs/search.md.
"""

from datapipe_django.search.body import search_after, search_body, sort_clause
from datapipe_django.specs.search import EngineField, FieldMap, NotSearchable, compile_spec

__all__ = [
    "EngineField",
    "FieldMap",
    "NotSearchable",
    "compile_spec",
    "search_after",
    "search_body",
    "sort_clause",
]
