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

The same vector and query give the rest of what a search engine answers:

* :func:`fulltext_rank`: ``ts_rank_cd`` (cover density) of the vector for the query, the
  score of ``ordering=relevance`` in the fallback (as double precision, so a cursor carries
  it exactly);
* :func:`headline`: ``ts_headline`` of one field, the fallback's highlighter, and
  :func:`fragments`, which HTML-escapes its text and keeps only the ``<em>`` marks;
* fuzzy matching (``fuzzy=True``): a word of ``q`` also matches a field holding a word
  similar to it by trigrams (``pg_trgm``'s ``word_similarity`` at least
  :data:`TRIGRAM_THRESHOLD`), so a one-letter typo still finds the row. The extension is
  created by this app's migration ``0002`` (when the database user may; see docs/search.md).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

__all__ = [
    "MARK_END",
    "MARK_START",
    "TRIGRAM_THRESHOLD",
    "fragments",
    "fulltext_condition",
    "fulltext_rank",
    "headline",
    "search_words",
]

#: The lowest ``word_similarity`` (0 to 1) at which a word of ``q`` matches a field's word in
#: fuzzy mode: a one-letter typo in a word of four or more letters scores 0.5 to 0.8.
TRIGRAM_THRESHOLD = 0.5

#: What ``ts_headline`` is told to put around a match, before the text is escaped: characters
#: of Unicode's private use area, which stored text does not hold (they are dropped from it).
MARK_START = "\ue000"
MARK_END = "\ue001"


def search_words(search: str) -> list[str]:
    """The whitespace-separated words of ``q`` (each must match, in fuzzy mode)."""
    return search.replace(",", " ").split()


def _vector(fields: Sequence[str], config: str) -> Any:
    from django.contrib.postgres.search import SearchVector

    return SearchVector(*fields, config=config)


def _query(search: str, config: str, search_type: str) -> Any:
    from django.contrib.postgres.search import SearchQuery

    return SearchQuery(search, config=config, search_type=search_type)


def _similar(word: str, field: str, threshold: float) -> Any:
    from django.db.models import F, FloatField, Func, Value
    from django.db.models.functions import Coalesce
    from django.db.models.lookups import GreaterThanOrEqual

    similarity = Func(Value(word), Coalesce(F(field), Value("")), function="word_similarity",
                      output_field=FloatField())
    return GreaterThanOrEqual(similarity, threshold)


def fulltext_condition(search: str, fields: Sequence[str], *, config: str = "simple",
                       search_type: str = "plain", fuzzy: bool = False,
                       threshold: float = TRIGRAM_THRESHOLD) -> Any:
    """A filter condition (an expression or ``Q`` for ``QuerySet.filter``): the words of
    ``search`` occur in ``fields`` (paths across relations allowed). ``fuzzy``: each word
    occurs, or a word of one of the fields is trigram-similar to it."""
    from django.contrib.postgres.search import SearchVectorExact
    from django.db.models import Q

    vector = _vector(fields, config)
    if not fuzzy:
        return SearchVectorExact(vector, _query(search, config, search_type))
    condition = Q()
    for word in search_words(search):
        either = Q(SearchVectorExact(vector, _query(word, config, "plain")))
        for field in fields:
            either |= Q(_similar(word, field, threshold))
        condition &= either
    return condition


def fulltext_rank(search: str, fields: Sequence[str], *, config: str = "simple",
                  search_type: str = "plain", fuzzy: bool = False) -> Any:
    """The relevance of a row for ``search``: ``ts_rank_cd`` of the fields' vector for the
    query (0 for a row only trigrams matched), plus, with ``fuzzy``, the best
    ``word_similarity`` of ``search`` in one of the fields. Double precision."""
    from django.contrib.postgres.search import SearchRank
    from django.db.models import F, FloatField, Func, Value
    from django.db.models.functions import Cast, Coalesce, Greatest

    rank: Any = Cast(SearchRank(_vector(fields, config), _query(search, config, search_type),
                                cover_density=True), FloatField())
    if fuzzy:
        similarities = [Func(Value(search), Coalesce(F(f), Value("")),
                             function="word_similarity", output_field=FloatField())
                        for f in fields]
        best = similarities[0] if len(similarities) == 1 else Greatest(*similarities)
        rank = rank + Cast(best, FloatField())
    return rank


def headline(search: str, field: str, *, config: str = "simple",
             search_type: str = "plain") -> Any:
    """``ts_headline`` of ``field`` for ``search``: the best passage of 5 to 20 words (the
    whole value when shorter), the matches between :data:`MARK_START` and :data:`MARK_END`.
    Turn it into fragments with :func:`fragments`."""
    from django.contrib.postgres.search import SearchHeadline
    from django.db.models import F, Value
    from django.db.models.functions import Coalesce, Replace

    text: Any = Coalesce(F(field), Value(""))
    for private in (MARK_START, MARK_END):  # stored ones are not marks
        text = Replace(text, Value(private), Value(""))
    return SearchHeadline(text, _query(search, config, search_type),
                          config=config, start_sel=MARK_START, stop_sel=MARK_END,
                          max_words=20, min_words=5)


def fragments(raw: str | None) -> list[str]:
    """A :func:`headline` as highlight fragments: one, HTML-escaped, the matches in ``<em>``;
    none when nothing in it matched."""
    if not raw or MARK_START not in raw:
        return []
    text = html.escape(raw.strip(), quote=True)
    return [text.replace(MARK_START, "<em>").replace(MARK_END, "</em>")]
