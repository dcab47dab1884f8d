"""What tracing, metrics and logging cost per execution, without a database.

    python benchmarks/observability.py [--executions 20000] [--rounds 10]

One pipeline over an in-memory source (50 rows, page of 10, one enricher asked for, no
deadline so that nothing runs on the thread pool), executed with: no-op hooks; the defaults
(the OpenTelemetry API without an SDK: what a project that configures nothing pays); an SDK
that records every span (batch processor, in-memory exporter) and every instrument (in-memory
reader); the same plus ``LoggingMiddleware``. The variants run interleaved, in ``--rounds``
rounds (each a batch of executions per variant, which goes first rotating). Prints microseconds
per execution (median of the rounds, p10-p90 over rounds) and the difference to the no-op hooks
(per round, then median and p10-p90 over rounds).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"

from benchmarks.common import fmt, interleaved, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=20_000, help="in all, per variant")
    parser.add_argument("--rounds", type=int, default=10)
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
    n = max(1, args.executions // args.rounds)

    def batch(p: Pipeline) -> None:
        for _ in range(n):
            p.execute(request)
        exporter.clear()

    # One sample per round and variant: a batch of n executions (microseconds apart, too
    # short to time one by one).
    samples = interleaved({label: (lambda p=p: batch(p)) for label, p in variants},
                          args.rounds, 1, warmup=1)
    per_exec = {label: [r[0] / n for r in rounds] for label, rounds in samples.items()}
    baseline = per_exec[variants[0][0]]
    print(f"{machine()}; {args.rounds} rounds x {n} executions per variant, interleaved\n")
    print(f"{'variant':<40} {'µs/execution':>20} {'vs no-op, µs':>22}")
    for label, _ in variants:
        extra = [v - b for v, b in zip(per_exec[label], baseline, strict=True)]
        print(f"{label:<40} {fmt(per_exec[label], 1e6, 1):>20} {fmt(extra, 1e6, 1):>22}")
    print("\n(median of the rounds, p10-p90 over rounds; vs no-op: per round, the variant's "
          "time minus the no-op hooks' of the same round)")


if __name__ == "__main__":
    main()
