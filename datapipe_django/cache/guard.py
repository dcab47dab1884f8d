"""The guard around every cache call: a cache outage is a bypass, never an error.

:class:`CacheGuard` is a small circuit breaker per cache alias (one per process, shared by every
fetcher and enricher). A cache error (connection refused, timeout, a server refusing writes)
opens it for ``DATAPIPE["CACHE_BREAKER_SECONDS"]``: meanwhile nobody calls that cache; then one
caller probes it. :func:`is_cache_error` tells a cache outage from a bug.

This module uses Django's cache API only.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core import checks

from datapipe_django._internal.breaker import Breaker, Breakers, TimedProbe
from datapipe_django.conf import datapipe_settings
from datapipe_django.errors import unavailable_reason

__all__ = ["CacheGuard", "get_guard", "is_cache_error", "unknown_cache_alias"]

logger = logging.getLogger("datapipe_django.cache")


def is_cache_error(exc: BaseException) -> bool:
    """True when ``exc`` means "the cache cannot answer now", not a bug: what
    :func:`datapipe_django.errors.unavailable_reason` gives a reason for (socket errors and
    timeouts, django-redis's ``ConnectionInterrupted``, redis-py's ``ConnectionError``,
    ``TimeoutError`` and ``ResponseError``, pymemcache and pylibmc errors, and a database
    cache's ``OperationalError``/``InterfaceError``)."""
    return unavailable_reason(exc) is not None


class CacheGuard(Breaker):
    """The circuit breaker of one cache alias (one per process, shared by every fetcher and
    enricher): a :class:`~datapipe_django._internal.breaker.Breaker` with a timed probe.

    Closed: calls go through. After a failure it is open for ``CACHE_BREAKER_SECONDS`` (or
    ``seconds()``): callers skip the cache. Then it lets one call through as a probe; success
    closes it, failure opens it again. ``failures`` counts every cache error seen.
    """

    def __init__(self, alias: str, *, seconds: Any = None, label: str = "Cache") -> None:
        super().__init__(alias, TimedProbe(seconds if seconds is not None else _breaker_seconds),
                         label=label, logger=logger)

    @property
    def alias(self) -> str:
        return self.name

    def absorb(self, exc: Exception) -> None:
        """Take ``exc``, raised by a cache call, as the cache being down (the breaker opens);
        re-raise it when it is a bug rather than an outage (giving back the probe, if any)."""
        if not is_cache_error(exc):
            self.release_probe()
            raise exc
        self.failed(exc)


def _breaker_seconds() -> float:
    return float(datapipe_settings.CACHE_BREAKER_SECONDS)


_guards: Breakers[CacheGuard] = Breakers(CacheGuard)


def get_guard(alias: str) -> CacheGuard:
    """The process-wide :class:`CacheGuard` of cache ``alias``."""
    return _guards.get(alias)


def unknown_cache_alias(pipeline: Any, user: str, alias: str) -> checks.Error | None:
    """E003 when ``user`` (what names the cache alias, e.g. ``CachedFetcher 'appdb'``) names
    an ``alias`` that is not in settings.CACHES."""
    from django.conf import settings

    if alias in settings.CACHES:
        return None
    return checks.Error(
        f"Pipeline {pipeline.name!r}: {user} uses cache alias {alias!r}, which is not in "
        f"settings.CACHES.",
        hint="Add it to CACHES, or pass cache='<alias>' / set DATAPIPE['CACHE'].",
        obj=pipeline, id="datapipe_django.E003",
    )
