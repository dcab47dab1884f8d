"""Sources a pipeline reads from: the protocol (:mod:`~datapipe_django.fetchers.base`) and the
built-in sources. None of them imports an optional client library (the search engines' and
Redis's are imported where they are used), so all are importable from here."""

from datapipe_django.fetchers.base import (
    BaseFetcher,
    Fetcher,
    FetchRequest,
    FetchResult,
    Verdict,
    as_fetcher,
)
from datapipe_django.fetchers.cache import CachedFetcher
from datapipe_django.fetchers.orm import ORMFetcher
from datapipe_django.fetchers.search import SearchFetcher

__all__ = [
    "BaseFetcher",
    "CachedFetcher",
    "FetchRequest",
    "FetchResult",
    "Fetcher",
    "ORMFetcher",
    "SearchFetcher",
    "Verdict",
    "as_fetcher",
]
