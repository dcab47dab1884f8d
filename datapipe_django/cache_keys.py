"""Kept for one release: cache keys live in :mod:`datapipe_django.cache.keys`."""

from datapipe_django.cache.keys import (
    CACHE_FORMAT,
    Uncacheable,
    canonical,
    class_path,
    digest,
    slug,
)

__all__ = ["CACHE_FORMAT", "Uncacheable", "canonical", "class_path", "digest", "slug"]
