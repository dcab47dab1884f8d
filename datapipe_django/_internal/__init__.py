"""Mechanisms shared by the cache, the search integration and the stores, each written once.

* :mod:`~datapipe_django._internal.breaker`: the circuit breaker (one class, its recovery
  policy a parameter);
* :mod:`~datapipe_django._internal.oncommit`: the one reader of Django's private list of
  on-commit callbacks;
* :mod:`~datapipe_django._internal.counters`: thread-safe named counters (``CacheStats``,
  ``SyncStats``) and the OpenTelemetry counters built through :mod:`datapipe_django.otel`.
* :mod:`~datapipe_django._internal.wrapping`: a duck-typed fetcher or enricher seen through
  its base class (``as_fetcher``, ``as_enricher``).

Nothing here is public API: import the names from the modules that use them.
"""
