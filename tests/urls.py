from __future__ import annotations

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from tests.testapp.outage_views import ArchiveViewSet, TopologyViewSet
from tests.testapp.views import ItemViewSet

router = SimpleRouter(trailing_slash=False)
router.register("items", ItemViewSet, basename="item")
router.register("outage-items", TopologyViewSet, basename="outage-item")
router.register("outage-archive", ArchiveViewSet, basename="outage-archive")

urlpatterns = [path("v1/", include(router.urls))]
