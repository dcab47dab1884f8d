"""URLs of the example project: ``/v1/payouts`` and ``/v1/payouts/<id>``."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from example_project.payouts.views import PayoutViewSet

router = SimpleRouter(trailing_slash=False)
router.register("payouts", PayoutViewSet, basename="payout")

urlpatterns = [
    path("v1/", include(router.urls)),
]
