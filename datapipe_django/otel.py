"""OpenTelemetry tracing and metrics for pipelines (needs ``opentelemetry-api`` only).

The library uses the OpenTelemetry *API* and never configures an SDK: your process does
(``opentelemetry-instrument``, or a ``TracerProvider``/``MeterProvider`` set at start-up). Until
one is configured every call here is a no-op of a few microseconds. Spans and instruments are
reported under the instrumentation scope ``datapipe_django``.

:class:`OpenTelemetryTracer` and :class:`OpenTelemetryMetrics` are what ``Pipeline`` uses by
default; pass ``tracer_provider=`` / ``meter_provider=`` to report to a provider other than
the global one (a test's in-memory exporter, say). See docs/observability.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Status, StatusCode

from datapipe_django.errors import PipelineError
from datapipe_django.observability import NullTracer

__all__ = ["DURATION_BUCKETS", "SCOPE", "OpenTelemetryMetrics", "OpenTelemetryTracer", "counter"]

#: The instrumentation scope name of every span and instrument.
SCOPE = "datapipe_django"

#: Histogram bucket boundaries in seconds (those of OpenTelemetry's HTTP server duration).
DURATION_BUCKETS = (0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                    7.5, 10.0)


def _version() -> str:
    import datapipe_django

    return str(getattr(datapipe_django, "__version__", ""))


def counter(name: str, *, unit: str, description: str) -> otel_metrics.Counter:
    """A counter of the global meter provider under :data:`SCOPE`: for the library's instruments
    that are not a pipeline's (the index sync's failures, reported after a commit)."""
    return otel_metrics.get_meter(SCOPE, _version()).create_counter(
        name, unit=unit, description=description)


def record_error(span: Any, exc: BaseException) -> None:
    """Put ``exc`` on ``span``: ``error.type`` always; the exception event and an ERROR status
    unless it is the client's error (a :class:`PipelineError` below 500: a bad parameter, no
    source for the request), which is not a failure of the operation (as in OpenTelemetry's
    HTTP conventions, where a 4xx leaves a server span's status unset)."""
    if isinstance(exc, PipelineError):
        span.set_attribute("error.type", exc.code)
        if exc.status_code < 500:
            return
    else:
        span.set_attribute("error.type", type(exc).__qualname__)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


class _SpanContext:
    """``start_span`` + attach, without the generator machinery of ``start_as_current_span``
    (this runs several times per request)."""

    __slots__ = ("_attributes", "_name", "_span", "_token", "_tracer")

    def __init__(self, tracer: otel_trace.Tracer, name: str,
                 attributes: Mapping[str, Any]) -> None:
        self._tracer, self._name, self._attributes = tracer, name, attributes

    def __enter__(self) -> otel_trace.Span:
        span = self._tracer.start_span(self._name, attributes=self._attributes,
                                       record_exception=False, set_status_on_exception=False)
        self._span = span
        self._token = otel_context.attach(otel_trace.set_span_in_context(span))
        return span

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc is not None and self._span.is_recording():
                record_error(self._span, exc)
        finally:
            otel_context.detach(self._token)
            self._span.end()


class OpenTelemetryTracer:
    """Spans through the OpenTelemetry API (the global tracer provider unless one is given).

    Spans are children of the current span: the request span of
    ``opentelemetry-instrumentation-django``, and in the pipeline's worker threads the span that
    was current when the work was submitted (the pool runs each task in a copy of the caller's
    ``contextvars``, where OpenTelemetry keeps its context).
    """

    def __init__(self, tracer_provider: otel_trace.TracerProvider | None = None) -> None:
        self._follows_global = tracer_provider is None
        if self._follows_global:
            # A provider named by OTEL_PYTHON_TRACER_PROVIDER is loaded on first request.
            otel_trace.get_tracer_provider()
        self._tracer = otel_trace.get_tracer(SCOPE, _version(), tracer_provider=tracer_provider)
        self._null = NullTracer()

    def span(self, name: str, attributes: Mapping[str, Any]) -> Any:
        if self._follows_global and _no_global_provider():
            # No SDK configured (yet): the span would be a no-op; skip its few microseconds.
            return self._null.span(name, attributes)
        return _SpanContext(self._tracer, name, attributes)


def _no_global_provider() -> bool:
    """True while no tracer provider is set globally (a ~50 ns check; the public
    ``get_tracer_provider()`` costs microseconds). If a future API drops the attribute, this
    says False and every span goes through the API, which is correct, only slower."""
    return getattr(otel_trace, "_TRACER_PROVIDER", False) is None


def _observe_replica_lag(options: CallbackOptions) -> Iterator[Observation]:
    from datapipe_django.conf import datapipe_settings
    from datapipe_django.replicas import replica_status

    for alias in datapipe_settings.REPLICAS:
        status = replica_status(alias)
        if status.lag is not None:
            yield Observation(status.lag, {"datapipe.replica": alias})


def _observe_replica_health(options: CallbackOptions) -> Iterator[Observation]:
    from datapipe_django.conf import datapipe_settings
    from datapipe_django.replicas import replica_status

    for alias in datapipe_settings.REPLICAS:
        yield Observation(1 if replica_status(alias).healthy else 0, {"datapipe.replica": alias})


class OpenTelemetryMetrics:
    """Instruments through the OpenTelemetry API (the global meter provider unless one is given).

    ================================  =========  ==============================================
    instrument                        kind       attributes (``datapipe.*`` unless dotted)
    ================================  =========  ==============================================
    ``datapipe.pipeline.duration``    histogram  pipeline, ``error.type`` on failure
    ``datapipe.stage.duration``       histogram  pipeline, stage, ``error.type`` on failure
    ``datapipe.source.duration``      histogram  pipeline, source, outcome (sources read)
    ``datapipe.source.errors``        counter    pipeline, source, outcome (unavailable, timeout)
    ``datapipe.source.declines``      counter    pipeline, source (it declined the request)
    ``datapipe.fallbacks``            counter    pipeline, source (read instead), fallback.reason
    ``datapipe.enricher.duration``    histogram  pipeline, enricher, outcome
    ``datapipe.enrichment.failures``  counter    pipeline, enricher, outcome
    ``datapipe.cache.hits``           counter    pipeline, source, cache (hit, stale)
    ``datapipe.cache.misses``         counter    pipeline, source, cache (miss, bypass)
    ``datapipe.replica.lag``          gauge      replica (each of ``DATAPIPE["REPLICAS"]``)
    ``datapipe.replica.healthy``      gauge      replica: 1 read, 0 skipped
    ================================  =========  ==============================================

    Attribute keys are ``datapipe.<name>``; durations are in seconds. The replica gauges read
    :func:`datapipe_django.replicas.replica_status` when the metrics are collected.
    """

    def __init__(self, meter_provider: otel_metrics.MeterProvider | None = None) -> None:
        meter = otel_metrics.get_meter(SCOPE, _version(), meter_provider=meter_provider)

        def histogram(name: str, description: str) -> otel_metrics.Histogram:
            return meter.create_histogram(name, unit="s", description=description,
                                          explicit_bucket_boundaries_advisory=DURATION_BUCKETS)

        self._execution = histogram("datapipe.pipeline.duration",
                                    "Duration of pipeline executions.")
        self._stage = histogram("datapipe.stage.duration", "Duration of pipeline stages.")
        self._source = histogram("datapipe.source.duration",
                                 "Duration of reads from a source, per outcome.")
        self._source_errors = meter.create_counter(
            "datapipe.source.errors", unit="{error}",
            description="Reads from a source that failed (unavailable, timed out).")
        self._source_declines = meter.create_counter(
            "datapipe.source.declines", unit="{request}",
            description="Requests a source declined (routing: lag, retention, no search...).")
        self._fallbacks = meter.create_counter(
            "datapipe.fallbacks", unit="{fallback}",
            description="Sources read because the source read before did not give the page.")
        self._enricher = histogram("datapipe.enricher.duration", "Duration of enrichers.")
        self._enrichment_failures = meter.create_counter(
            "datapipe.enrichment.failures", unit="{failure}",
            description="Enrichers that failed or did not finish before the deadline.")
        self._cache_hits = meter.create_counter(
            "datapipe.cache.hits", unit="{hit}", description="Pages served from the cache.")
        self._cache_misses = meter.create_counter(
            "datapipe.cache.misses", unit="{miss}",
            description="Pages a cached fetcher had to read from its source.")
        meter.create_observable_gauge(
            "datapipe.replica.lag", callbacks=[_observe_replica_lag], unit="s",
            description="Replication lag of each replica, as measured on the replica.")
        meter.create_observable_gauge(
            "datapipe.replica.healthy", callbacks=[_observe_replica_health], unit="1",
            description="1 when the replica is read, 0 when it is skipped (down or too far "
                        "behind).")

    def execution(self, pipeline: str, duration: float, error: str | None) -> None:
        attributes = {"datapipe.pipeline": pipeline}
        if error is not None:
            attributes["error.type"] = error
        self._execution.record(duration, attributes)

    def stage(self, pipeline: str, stage: str, duration: float, error: str | None) -> None:
        attributes = {"datapipe.pipeline": pipeline, "datapipe.stage": stage}
        if error is not None:
            attributes["error.type"] = error
        self._stage.record(duration, attributes)

    def source(self, pipeline: str, source: str, outcome: str, duration: float) -> None:
        if outcome == "declined":
            self._source_declines.add(1, {"datapipe.pipeline": pipeline,
                                          "datapipe.source": source})
            return
        if outcome == "not_needed":
            return
        attributes = {"datapipe.pipeline": pipeline, "datapipe.source": source,
                      "datapipe.outcome": outcome}
        if duration:
            self._source.record(duration, attributes)
        if outcome != "ok":
            self._source_errors.add(1, attributes)

    def fallback(self, pipeline: str, source: str, reason: str) -> None:
        self._fallbacks.add(1, {"datapipe.pipeline": pipeline, "datapipe.source": source,
                                "datapipe.fallback.reason": reason})

    def enricher(self, pipeline: str, enricher: str, outcome: str, duration: float) -> None:
        attributes = {"datapipe.pipeline": pipeline, "datapipe.enricher": enricher,
                      "datapipe.outcome": outcome}
        if duration:
            self._enricher.record(duration, attributes)
        if outcome != "ok":
            self._enrichment_failures.add(1, attributes)

    def cache(self, pipeline: str, source: str, outcome: str) -> None:
        attributes = {"datapipe.pipeline": pipeline, "datapipe.source": source,
                      "datapipe.cache": outcome}
        if outcome in ("hit", "stale"):
            self._cache_hits.add(1, attributes)
        else:
            self._cache_misses.add(1, attributes)
