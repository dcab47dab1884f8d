"""Counters of the cache's users."""

from __future__ import annotations

from datapipe_django._internal.counters import Counters

__all__ = ["CacheStats"]


class CacheStats(Counters):
    """Counters of one :class:`~datapipe_django.fetchers.CachedFetcher` or caching
    ``BatchEnricher`` (thread-safe): ``hits``, ``stale`` (stale copies served), ``misses``
    (computed and stored), ``waits`` (hits after waiting for another caller), ``bypasses``
    (answered without the cache) and ``errors`` (cache errors)."""

    NAMES = ("hits", "stale", "misses", "waits", "bypasses", "errors")
