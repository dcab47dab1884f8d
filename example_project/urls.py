"""URLs of the example project.

* ``/v1/payouts`` and ``/v1/payouts/<id>``: the API (JSON, or DRF's browsable API in a browser);
* ``/schema/`` (OpenAPI 3), ``/schema/swagger-ui/``, ``/schema/redoc/``: with drf-spectacular;
* ``/metrics``: Prometheus metrics, with the OpenTelemetry SDK and Prometheus exporter;
* ``/__debug__/``: django-debug-toolbar (DEBUG on, installed), with the datapipe panel.
"""

from django.conf import settings
from django.urls import include, path
from rest_framework.routers import SimpleRouter

from example_project import telemetry
from example_project.payouts.views import PayoutViewSet

router = SimpleRouter(trailing_slash=False)
router.register("payouts", PayoutViewSet, basename="payout")

urlpatterns = [
    path("v1/", include(router.urls)),
]

if settings.OPENAPI:
    from drf_spectacular.views import (
        SpectacularAPIView,
        SpectacularRedocView,
        SpectacularSwaggerView,
    )

    urlpatterns += [
        path("schema/", SpectacularAPIView.as_view(), name="schema"),
        path("schema/swagger-ui/", SpectacularSwaggerView.as_view(url_name="schema"),
             name="swagger-ui"),
        path("schema/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    ]

if settings.DEBUG_TOOLBAR:  # /__debug__/: django-debug-toolbar, with the datapipe panel
    from debug_toolbar.toolbar import debug_toolbar_urls

    urlpatterns += debug_toolbar_urls()

if telemetry.prometheus_available():
    urlpatterns.append(path("metrics", telemetry.metrics_view, name="metrics"))
