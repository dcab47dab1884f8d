"""Endpoints over primary → standby → archive for the outage tests."""

from __future__ import annotations

from datapipe_django import Pipeline
from datapipe_django.fetchers import ORMFetcher
from datapipe_django.rest import PipelineViewSet
from tests.testapp.models import Item
from tests.testapp.serializers import ItemSerializer

topology = Pipeline(
    "test-outage-items",
    model=Item,
    tenant_field="tenant",
    ordering=("-created_at", "-id"),
    # Reads prefer the standby; the primary when the standby is skipped (lag, outage,
    # read-your-writes); the archive completes pages with the rows the others no longer keep.
    fetchers=[ORMFetcher("replica"), ORMFetcher("primary"), ORMFetcher("archive")],
)

archive_only = Pipeline("test-outage-archive", model=Item, tenant_field="tenant",
                        fetchers=[ORMFetcher("archive")])


class _TenantFromHeader(PipelineViewSet):
    serializer_class = ItemSerializer

    def get_tenant(self):
        return self.request.headers.get("X-Tenant")


class TopologyViewSet(_TenantFromHeader):
    pipeline = topology


class ArchiveViewSet(_TenantFromHeader):
    pipeline = archive_only
