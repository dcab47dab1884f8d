"""PostgreSQL full-text search: the database's answer to ``q`` when the engine is down.

``ORMFetcher(using=..., search="fulltext")`` matches ``q`` with
``django.contrib.postgres.search`` on a PostgreSQL alias instead of ``icontains``: a
``SearchVector`` over the pipeline's ``search_fields`` (``config`` ``"simple"`` by default:
lower-cased words, no stemming, like the engine's ``standard`` analyzer) must match a
``SearchQuery`` of the words (``search_type`` ``"plain"``: every word). Like the engine, and
unlike ``icontains``, it matches whole words: ``q=invoice`` finds "Invoice 42" but not
"invoices" (no stemming with ``simple``) nor "reinvoice". Words are cut by PostgreSQL's
parser, which differs from the engine's tokenizer on hyphens, e-mail addresses and URLs.
Nothing needs ``django.contrib.postgres`` in ``INSTALLED_APPS``; no index is required, but a
GIN index on the same ``to_tsvector`` expression makes it fast on large tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["fulltext_condition"]


def fulltext_condition(search: str, fields: Sequence[str], *, config: str = "simple",
                       search_type: str = "plain") -> Any:
    """A filter condition (a lookup expression for ``QuerySet.filter``): the words of
    ``search`` occur in ``fields`` (paths across relations allowed)."""
    from django.contrib.postgres.search import SearchQuery, SearchVector, SearchVectorExact

    vector = SearchVector(*fields, config=config)
    return SearchVectorExact(vector, SearchQuery(search, config=config, search_type=search_type))
