from __future__ import annotations

from datapipe_django.rest import PipelineViewSet
from tests.testapp.pipelines import items
from tests.testapp.serializers import ItemSerializer


class ItemViewSet(PipelineViewSet):
    """Tenant and auth type come from headers, as an API gateway would set them."""

    pipeline = items
    serializer_class = ItemSerializer

    def get_tenant(self):
        return self.request.headers.get("X-Tenant")

    def get_auth_type(self):
        return self.request.headers.get("X-Auth-Type", "public")
