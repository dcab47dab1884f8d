"""What a page is enriched with after the fetch."""

from datapipe_django.enrichers.base import BaseEnricher, EnrichContext, Enricher, as_enricher
from datapipe_django.enrichers.batch import BatchEnricher
from datapipe_django.enrichers.composite import CompositeEnricher
from datapipe_django.enrichers.prefetch import PrefetchEnricher

__all__ = [
    "BaseEnricher",
    "BatchEnricher",
    "CompositeEnricher",
    "EnrichContext",
    "Enricher",
    "PrefetchEnricher",
    "as_enricher",
]
