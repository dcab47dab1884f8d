"""The two list endpoints under test, over the same model, FilterSet and serializer.

* ``OursViewSet``: a :class:`PipelineViewSet` over a one-fetcher :class:`Pipeline`.
* ``DRFListView``: what one writes by hand with DRF: ``ListAPIView`` + ``DjangoFilterBackend``
  + a limit/offset paginator that answers the same envelope as ours (limit + 1 rows, no COUNT).
"""

from __future__ import annotations

from django.urls import path
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.generics import ListAPIView

from benchmarks.pagination import EnvelopePagination
from datapipe_django import Pipeline
from datapipe_django.fetchers import ORMFetcher
from datapipe_django.rest import PipelineViewSet
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Item
from tests.testapp.serializers import ItemSerializer

ALIAS = "default"  # the PostgreSQL alias of benchmarks/settings.py
ORDERING = ("-created_at", "-id")

items = Pipeline(
    "bench-items",
    model=Item,
    filterset_class=ItemFilterSet,
    tenant_field="tenant",
    ordering=ORDERING,
    fetchers=[ORMFetcher(using=ALIAS)],
)


class OursViewSet(PipelineViewSet):
    pipeline = items
    serializer_class = ItemSerializer

    def get_tenant(self):
        return self.request.headers.get("X-Tenant")


class DRFListView(ListAPIView):
    serializer_class = ItemSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = ItemFilterSet
    pagination_class = EnvelopePagination

    def get_queryset(self):
        tenant = self.request.headers.get("X-Tenant")
        return Item.objects.using(ALIAS).filter(tenant=tenant).order_by(*ORDERING)


ours_list = OursViewSet.as_view({"get": "list"})
drf_list = DRFListView.as_view()

urlpatterns = [path("ours/items", ours_list), path("drf/items", drf_list)]
