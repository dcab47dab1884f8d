"""Pipelines the REST tests serve (see tests/testapp/views.py)."""

from __future__ import annotations

from django.db.models import prefetch_related_objects

from datapipe_django import Pipeline
from datapipe_django.enrichers import BaseEnricher
from datapipe_django.fetchers import ORMFetcher
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Item


class RelatedEnricher(BaseEnricher):
    """A minimal prefetch enricher for the REST tests."""

    def enrich(self, items, context):
        prefetch_related_objects(items, self.name)


items = Pipeline(
    "test-items",
    model=Item,
    filterset_class=ItemFilterSet,
    search_fields=("name",),
    tenant_field="tenant",
    ordering=("-created_at", "-id"),
    ordering_fields=("created_at", "amount", "score", "name", "id"),
    fetchers=[ORMFetcher("default")],
    enrichers=[RelatedEnricher("owner"), RelatedEnricher("category", auth_types={"private"})],
    facet_fields=("status", "category"),
)
