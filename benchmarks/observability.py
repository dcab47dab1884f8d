"""What tracing, metrics and logging cost per execution, without a database.

    python benchmarks/observability.py [--executions 20000]

One pipeline over an in-memory source (50 rows, page of 10, one enricher asked for, no
deadline so that nothing runs on the thread pool), executed with: no-op hooks; the defaults
(the OpenTelemetry API without an SDK: what a project that configures nothing pays); an SDK
that records every span (batch processor, in-memory exporter) and every instrument (in-memory
reader); the same plus ``LoggingMiddleware``. Prints microseconds per execution and the
difference to the no-op hooks: the best of 10 interleaved rounds, the estimate least disturbed
by other processes on a shared machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=20_000)
    args = parser.parse_args()

    import django

    django.setup()
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from datapipe_django import Pipeline, PipelineRequest
    from datapipe_django.enrichers import BaseEnricher
    from datapipe_django.middleware import LoggingMiddleware
    from datapipe_django.observability import NullMetrics, NullTracer
    from datapipe_django.otel import OpenTelemetryMetrics, OpenTelemetryTracer
    from datapipe_django.test import InMemoryFetcher
    from tests.testapp.models import Item

    class Mark(BaseEnricher):
        def enrich(self, items, context):
            for item in items:
                item.marked = True

    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = [Item(id=i, tenant="t1", name=f"n{i}", status="queued", amount=i,
                 created_at=base + dt.timedelta(minutes=i), day=base.date())
            for i in range(1, 51)]
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))  # as in production
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    logging.getLogger("datapipe_django").addHandler(logging.NullHandler())
    logging.getLogger("datapipe_django").setLevel(logging.INFO)
    logging.getLogger("datapipe_django").propagate = False

    def pipeline(name: str, **kwargs) -> Pipeline:
        return Pipeline(name, model=Item, fetchers=[InMemoryFetcher(rows)], tenant_field="tenant",
                        ordering=("-created_at", "-id"), enrichers=[Mark("mark")],
                        timeout=None, register=False, **kwargs)

    recording = {"tracer": OpenTelemetryTracer(tracer_provider=tracer_provider),
                 "metrics": OpenTelemetryMetrics(meter_provider=meter_provider)}
    variants = [
        ("no-op hooks", pipeline("noop", tracer=NullTracer(), metrics=NullMetrics())),
        ("defaults (OpenTelemetry API, no SDK)", pipeline("default")),
        ("SDK recording spans and metrics", pipeline("sdk", **recording)),
        ("SDK + LoggingMiddleware", pipeline("sdk-log", middleware=[LoggingMiddleware()],
                                             **recording)),
    ]
    request = PipelineRequest(tenant="t1", limit=10, expand={"mark"})
    rounds: dict[str, list[float]] = {label: [] for label, _ in variants}
    n = args.executions // 10
    for _ in range(10):
        for label, p in variants:
            start = time.perf_counter()
            for _ in range(n):
                p.execute(request)
            rounds[label].append((time.perf_counter() - start) / n)
            exporter.clear()
    baseline = min(rounds[variants[0][0]])
    print(f"{'variant':<40} {'µs/execution':>13} {'vs no-op':>10}")
    for label, _ in variants:
        value = min(rounds[label])
        print(f"{label:<40} {value * 1e6:>13.1f} {(value - baseline) * 1e6:>+10.1f}")


if __name__ == "__main__":
    main()
