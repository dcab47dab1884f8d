"""The ``DATAPIPE`` settings object.

Every key is optional; :data:`DEFAULTS` holds the defaults. Read values through
``datapipe_settings.KEY``: they are read lazily, cached, and reset when Django's
``setting_changed`` fires, so ``override_settings(DATAPIPE={...})`` works in tests.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

__all__ = ["DEFAULTS", "DatapipeSettings", "datapipe_settings"]

DEFAULTS: dict[str, Any] = {
    # Database topology (see docs/databases.md).
    "PRIMARY": "default",
    "REPLICAS": [],
    "ARCHIVES": [],
    "REPLICA_MAX_LAG": 5.0,
    "PIN_AFTER_WRITE": 3.0,
    "REPLICA_CHECK_INTERVAL": 1.0,
    # Execution.
    "TIMEOUT": 5.0,
    "MAX_WORKERS": 8,
    # Isolation between stores (see docs/operations.md and datapipe_django/stores.py).
    "STORE_CONNECT_TIMEOUT": 0.5,   # longest wait for a connection (pooled or new), seconds
    "STORE_RETRY_INTERVAL": 0.2,    # a store whose connection failed is retried this often
    "ENRICH_BREAKER_SECONDS": 0.5,  # a BatchEnricher whose service failed skips it this long
    # Paging.
    "MAX_LIMIT": 100,
    "DEFAULT_LIMIT": 10,
    "MAX_OFFSET": 10_000,
    # Enrichment.
    "MAX_EXPAND_DEPTH": 2,
    "EXPAND_LIMIT": 100,  # most related rows a to-many expansion gives per parent row
    # Cache (see docs/caching.md).
    "CACHE": "default",             # Django cache alias CachedFetcher uses
    "CACHE_TTL": 60.0,              # seconds, when CachedFetcher is given no ttl
    "CACHE_KEY_PREFIX": "datapipe",  # first part of every key (entries and generations)
    "CACHE_BREAKER_SECONDS": 5.0,   # after a cache error, answer without the cache this long
    # Search index sync (see docs/search.md).
    "SEARCH_SYNC_TIMEOUT": 2.0,     # seconds a write's bulk request to the engine may take
    "SEARCH_SYNC_COOLDOWN": 5.0,    # after an engine outage, writes skip it this long (marked)
    # Strict input (see docs/rest.md, "Bad input").
    "SEARCH_MAX_LENGTH": 256,       # longest `q`, in characters
    "SEARCH_MAX_TERMS": 32,         # most words in `q`
    "UNKNOWN_PARAMETERS": "error",  # "error": an unknown query parameter is a 400; "ignore"
    # Seconds a client should wait before retrying a 503.
    "RETRY_AFTER": 1,
    # PipelineViewSet sends X-Datapipe-Source and X-Datapipe-Unavailable (source names).
    "SOURCE_HEADERS": True,
    # PipelineViewSet adds a Server-Timing header (stages and sources) to every response.
    "SERVER_TIMING": False,
    # PipelineViewSet's read path (see docs/rest.md): each serializer class compiled once into
    # plain attribute reads for the fields that allow it, and JSON written by orjson when it is
    # installed. The same JSON as DRF's; False gives DRF's own serializer and renderer.
    "FAST_PATH": True,
}


class DatapipeSettings:
    """Lazy, cached view of ``settings.DATAPIPE`` merged over :data:`DEFAULTS`."""

    def __init__(self, defaults: dict[str, Any] | None = None) -> None:
        self.defaults = defaults or DEFAULTS
        self._cache: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        value = getattr(settings, "DATAPIPE", None) or {}
        if not isinstance(value, dict):
            raise ImproperlyConfigured(
                f"settings.DATAPIPE must be a dict, got {type(value).__name__}."
            )
        return value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self.defaults:
            raise AttributeError(f"Invalid DATAPIPE setting: {name!r}")
        if name not in self._cache:
            self._cache[name] = self.user_settings.get(name, self.defaults[name])
        return self._cache[name]

    def reload(self) -> None:
        self._cache.clear()


datapipe_settings = DatapipeSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "DATAPIPE":
        datapipe_settings.reload()


setting_changed.connect(_reload)
