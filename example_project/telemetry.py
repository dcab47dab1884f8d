"""OpenTelemetry for the example project: the SDK, Django's request spans, Prometheus metrics.

The library only uses the OpenTelemetry API; a project configures the SDK, as this one does
when the packages are installed (``pip install -e ".[dev]"`` installs them):

* a ``MeterProvider`` whose ``PrometheusMetricReader`` is served at ``/metrics``
  (:func:`metrics_view`, see ``urls.py``);
* a ``TracerProvider``; ``DATAPIPE_EXAMPLE_TRACES=console`` prints every finished span;
* ``opentelemetry-instrumentation-django``: a span per request, under which the pipeline's
  spans nest.

Without the packages nothing is configured and the pipelines' telemetry calls are no-ops.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from typing import Any

from django.apps import AppConfig
from django.http import HttpRequest, HttpResponse

__all__ = ["TelemetryConfig", "WSGIPathMiddleware", "configure", "metrics_view",
           "prometheus_available"]

_configured = False
_lock = threading.Lock()


def prometheus_available() -> bool:
    """Whether the SDK and its Prometheus exporter are installed."""
    return all(importlib.util.find_spec(name) is not None
               for name in ("opentelemetry.sdk", "opentelemetry.exporter.prometheus"))


def configure() -> bool:
    """Set the global tracer and meter providers once per process; False without the SDK."""
    global _configured
    with _lock:
        if _configured:
            return True
        try:
            from opentelemetry import metrics, trace
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
        except ImportError:
            return False
        resource = Resource.create({"service.name": "datapipe-example"})
        readers: list[Any] = []
        if prometheus_available():
            from opentelemetry.exporter.prometheus import PrometheusMetricReader

            readers.append(PrometheusMetricReader())
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
        tracer_provider = TracerProvider(resource=resource)
        if os.environ.get("DATAPIPE_EXAMPLE_TRACES", "").strip().lower() == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

            tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        trace.set_tracer_provider(tracer_provider)
        try:
            from opentelemetry.instrumentation.django import DjangoInstrumentor
        except ImportError:
            pass
        else:
            DjangoInstrumentor().instrument()
            # Outermost, before the instrumentation's own middleware (see WSGIPathMiddleware).
            from django.conf import settings

            middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
            guard = f"{__name__}.WSGIPathMiddleware"
            if guard not in middleware:
                settings.MIDDLEWARE = [guard, *middleware]
        _configured = True
        return True


class WSGIPathMiddleware:
    """Gives ``request.META["PATH_INFO"]`` back its WSGI form (UTF-8 bytes read as latin-1).

    Django replaces it with the decoded path, and opentelemetry-instrumentation-django rebuilds
    the URL from it with ``wsgiref.util.request_uri``, which encodes it as latin-1: any path
    with a character above U+00FF (``/%E2%82%AC``) was a 500 inside the instrumentation
    (open-telemetry/opentelemetry-python-contrib#3237). Django routes by ``request.path_info``,
    which this leaves as it is, so such a path is an ordinary 404, and the span's URL is right.
    """

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.META.get("PATH_INFO")
        if isinstance(path, str) and not path.isascii():
            request.META["PATH_INFO"] = path.encode("utf-8", "surrogateescape").decode("latin-1")
        response: HttpResponse = self.get_response(request)
        return response


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``/metrics``: every instrument, in Prometheus' text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


class TelemetryConfig(AppConfig):
    """Listed in INSTALLED_APPS so that telemetry is set up when Django is (before the WSGI
    handler loads its middleware, where the Django instrumentation inserts its own)."""

    name = "example_project"
    label = "example_telemetry"
    verbose_name = "Telemetry"

    def ready(self) -> None:
        configure()
