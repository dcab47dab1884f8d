"""The guard around every cache call: a cache outage is a bypass, never an error.

:class:`CacheGuard` is a small circuit breaker per cache alias (one per process, shared by every
fetcher and enricher). A cache error (connection refused, timeout, a server refusing writes)
opens it for ``DATAPIPE["CACHE_BREAKER_SECONDS"]``: meanwhile nobody calls that cache; then one
caller probes it. :func:`is_cache_error` tells a cache outage from a bug.

This module uses Django's cache API only; the exception classes of the cache clients
(redis-py, django-redis, pymemcache, pylibmc) are recognised when those are loaded.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

from django.core import checks
from django.db import InterfaceError, OperationalError

from datapipe_django.conf import datapipe_settings

__all__ = ["CacheGuard", "get_guard", "is_cache_error", "unknown_cache_alias"]

logger = logging.getLogger("datapipe_django.cache")


def is_cache_error(exc: BaseException) -> bool:
    """True when ``exc`` means "the cache cannot answer now", not a bug.

    Socket errors and timeouts (``OSError``), django-redis's ``ConnectionInterrupted``,
    redis-py's ``ConnectionError``/``TimeoutError``/``ResponseError`` (a server that is loading,
    read-only or out of memory), pymemcache and pylibmc errors, and a database cache's
    ``OperationalError``/``InterfaceError``.
    """
    if isinstance(exc, OSError | OperationalError | InterfaceError):
        return True
    for module, names in _CLIENT_ERRORS:
        loaded = sys.modules.get(module)
        if loaded is None:
            continue
        for name in names:
            cls = getattr(loaded, name, None)
            if isinstance(cls, type) and isinstance(exc, cls):
                return True
    return False


_CLIENT_ERRORS = (
    ("django_redis.exceptions", ("ConnectionInterrupted",)),
    ("redis.exceptions", ("ConnectionError", "TimeoutError", "ResponseError")),
    ("pymemcache.exceptions", ("MemcacheError",)),
    ("pylibmc", ("Error",)),
)


class CacheGuard:
    """Circuit breaker for one cache alias (one per process, shared by every fetcher).

    Closed: calls go through. After a failure it is open for ``CACHE_BREAKER_SECONDS``: callers
    skip the cache. Then it lets one call through as a probe; success closes it, failure opens
    it again. ``failures`` counts every cache error seen.

    The same breaker guards other dependencies (a ``BatchEnricher``'s service): ``seconds``
    then gives how long it stays open, and ``label`` names the dependency in the log lines.
    """

    def __init__(self, alias: str, *, seconds: Any = None, label: str = "Cache") -> None:
        self.alias = alias
        self._seconds = seconds  # a callable returning seconds; None: CACHE_BREAKER_SECONDS
        self.label = label
        self.failures = 0
        self.last_error = ""
        self._open_until = 0.0
        self._probing = False
        self._lock = threading.Lock()
        #: ``time.monotonic()`` of the last successful call (0.0: none yet).
        self.last_success = 0.0

    @property
    def is_open(self) -> bool:
        return self._open_until != 0.0

    def allow(self) -> bool:
        """Whether the caller may use the cache now (the probe, when the breaker is open)."""
        if self._open_until == 0.0:
            return True
        with self._lock:
            if self._open_until == 0.0:
                return True
            if self._probing or time.monotonic() < self._open_until:
                return False
            self._probing = True
            return True

    def succeeded(self) -> None:
        self.last_success = time.monotonic()
        if self._open_until == 0.0:
            return
        with self._lock:
            if self._open_until != 0.0:
                self._open_until, self._probing = 0.0, False
                logger.warning("%s %r is reachable again; using it.", self.label, self.alias)

    def failed(self, exc: BaseException) -> None:
        seconds = float(self._seconds() if self._seconds is not None
                        else datapipe_settings.CACHE_BREAKER_SECONDS)
        with self._lock:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._open_until = time.monotonic() + max(seconds, 0.001)
            self._probing = False
        logger.warning(
            "%s %r is unavailable (%s); answering without it for %.1fs.",
            self.label, self.alias, self.last_error, seconds,
        )

    def absorb(self, exc: Exception) -> None:
        """Take ``exc``, raised by a cache call, as the cache being down (the breaker opens);
        re-raise it when it is a bug rather than an outage (giving back the probe, if any)."""
        if not is_cache_error(exc):
            self.release_probe()
            raise exc
        self.failed(exc)

    def release_probe(self) -> None:
        """End a probe that made no cache call (the breaker stays as it is)."""
        if self._probing:
            with self._lock:
                self._probing = False

    def reset(self) -> None:
        with self._lock:
            self._open_until, self._probing = 0.0, False


_guards: dict[str, CacheGuard] = {}
_guards_lock = threading.Lock()


def get_guard(alias: str) -> CacheGuard:
    """The process-wide :class:`CacheGuard` of cache ``alias``."""
    guard = _guards.get(alias)
    if guard is None:
        with _guards_lock:
            guard = _guards.setdefault(alias, CacheGuard(alias))
    return guard


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
