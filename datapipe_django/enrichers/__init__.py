"""What a page is enriched with after the fetch."""

from datapipe_django.enrichers.base import BaseEnricher, CompositeEnricher, EnrichContext, Enricher

__all__ = ["BaseEnricher", "CompositeEnricher", "EnrichContext", "Enricher"]
