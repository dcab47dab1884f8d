"""Sources a pipeline reads from."""

from __future__ import annotations

from typing import Any

from datapipe_django.fetchers.base import BaseFetcher, Fetcher, FetchRequest, FetchResult, Verdict
from datapipe_django.fetchers.orm import ORMFetcher

__all__ = [
    "BaseFetcher",
    "CachedFetcher",
    "FetchRequest",
    "FetchResult",
    "Fetcher",
    "ORMFetcher",
    "SearchFetcher",
    "Verdict",
]

# Integrations that need optional client libraries are imported on first use.
_LAZY: dict[str, str] = {
    "CachedFetcher": "datapipe_django.fetchers.cache",
    "SearchFetcher": "datapipe_django.fetchers.search",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
