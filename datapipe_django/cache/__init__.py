"""The cache box: everything :class:`~datapipe_django.fetchers.CachedFetcher` and a
``BatchEnricher(cache_ttl=...)`` rely on besides the fetcher itself.

* :mod:`~datapipe_django.cache.keys`: canonical forms, digests and slugs of cache keys;
* :mod:`~datapipe_django.cache.rows`: rows ⇄ JSON entries, and the instances rebuilt from them;
* :mod:`~datapipe_django.cache.dependencies`: the models a page's filters join;
* :mod:`~datapipe_django.cache.generations`: generation tokens, replaced on write (signals,
  :func:`~datapipe_django.cache.generations.invalidate`);
* :mod:`~datapipe_django.cache.guard`: the circuit breaker of each cache alias;
* :mod:`~datapipe_django.cache.stats`: the counters of a cached fetcher or enricher.

The fetcher, :class:`~datapipe_django.fetchers.cache.CachedFetcher`, lives with the other
fetchers. This package uses Django's cache API only.
"""
