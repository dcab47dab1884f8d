"""Tracing and metrics through the OpenTelemetry API, checked with the SDK's in-memory exporter
and metric reader (providers passed in: no global provider is set by these tests)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.test import override_settings
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from datapipe_django import (
    FallbackMode,
    Pipeline,
    PipelineRequest,
    SourcesUnavailable,
    ValidationFailed,
    observability,
)
from datapipe_django.chain import Attempt
from datapipe_django.enrichers import BaseEnricher
from datapipe_django.fetchers import FetchResult
from datapipe_django.observability import (
    NullMetrics,
    NullTracer,
    RecordingTracer,
    default_metrics,
    default_tracer,
    fallbacks,
)
from datapipe_django.otel import OpenTelemetryMetrics, OpenTelemetryTracer
from datapipe_django.replicas import forget_replica_status
from datapipe_django.test import InMemoryFetcher
from tests.conftest import require_alias
from tests.testapp.models import Item

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def item(pk: int, minutes: int = 0) -> Item:
    return Item(id=pk, tenant="t1", name=f"n{pk}", status="queued", amount=pk,
                created_at=BASE + dt.timedelta(minutes=minutes), day=BASE.date())


@pytest.fixture
def provider():
    """(provider, exporter): an SDK tracer provider with an in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def spans(provider):
    """(tracer, exporter): our tracer on that provider."""
    return OpenTelemetryTracer(tracer_provider=provider[0]), provider[1]


@pytest.fixture
def meter():
    """(metrics, reader): an SDK meter provider with an in-memory reader."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield OpenTelemetryMetrics(meter_provider=provider), reader
    provider.shutdown()


def points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict, object]]:
    """(attributes, data point) of every point of instrument ``name``."""
    data = reader.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend((dict(p.attributes), p) for p in metric.data.data_points)
    return found


def declines(request):
    return False


def make(*fetchers, tracer=None, metrics=None, **kwargs) -> Pipeline:
    kwargs.setdefault("timeout", 5.0)
    return Pipeline("obs-test", model=Item, fetchers=list(fetchers), tenant_field="tenant",
                    ordering=("-created_at", "-id"), register=False, tracer=tracer,
                    metrics=metrics, **kwargs)


def by_name(exporter: InMemorySpanExporter) -> dict[str, object]:
    return {s.name: s for s in exporter.get_finished_spans()}


# -- spans ---------------------------------------------------------------------------------------

def test_a_span_per_execution_per_stage_and_per_source_read(spans):
    tracer, exporter = spans
    p = make(InMemoryFetcher([item(1)], name="recent", can_handle=declines),
             InMemoryFetcher([], name="replica", available=False),
             InMemoryFetcher([item(1), item(2, minutes=1)], name="archive"),
             tracer=tracer)
    p.execute(PipelineRequest(tenant="t1", limit=10))
    named = by_name(exporter)
    root = named["datapipe.pipeline"]
    assert root.parent is None
    assert root.attributes["datapipe.pipeline"] == "obs-test"
    assert root.attributes["datapipe.operation"] == "list"
    assert root.attributes["datapipe.item_count"] == 2
    assert list(root.attributes["datapipe.sources"]) == ["archive"]
    assert 0 < root.attributes["datapipe.deadline.remaining"] <= 5.0
    stages = ["validate", "fetch", "transform", "enrich", "build"]
    for stage in stages:
        span = named[f"datapipe.stage.{stage}"]
        assert span.parent.span_id == root.context.span_id
        assert span.attributes["datapipe.stage"] == stage
    fetch = named["datapipe.stage.fetch"]
    # Only sources that were read get a span; the one that declined is an event of the stage.
    assert "datapipe.source.recent" not in named
    replica, archive = named["datapipe.source.replica"], named["datapipe.source.archive"]
    for span in (replica, archive):
        assert span.parent.span_id == fetch.context.span_id
        assert span.attributes["datapipe.pipeline"] == "obs-test"
        assert 0 < span.attributes["datapipe.deadline.remaining"] <= 5.0
    assert archive.attributes["datapipe.outcome"] == "ok"
    assert archive.attributes["datapipe.item_count"] == 2
    # Why each source was read: the first candidate for itself, the archive as a fallback.
    assert "datapipe.fallback.reason" not in replica.attributes
    assert archive.attributes["datapipe.fallback.reason"] == "unavailable"
    assert archive.status.status_code is StatusCode.UNSET
    # The unavailable source: outcome, reason, the exception and an error status.
    assert replica.attributes["datapipe.outcome"] == "unavailable"
    assert replica.attributes["datapipe.reason"] == "switched off"
    assert replica.attributes["error.type"] == "SourceUnavailable"
    assert replica.status.status_code is StatusCode.ERROR
    assert [e.name for e in replica.events] == ["exception"]
    # The fetch stage says why the page came from elsewhere.
    assert fetch.attributes["datapipe.fallback"] is True
    assert fetch.attributes["datapipe.fallback.reason"] == "unavailable"
    assert fetch.attributes["datapipe.fallback.mode"] == "sequential"
    assert fetch.attributes["datapipe.fallback.detail"] == (
        "recent: declined (declined by declines); replica: unavailable (switched off); "
        "archive: ok, 2 rows")
    declined = [e for e in fetch.events if e.name == "datapipe.source.declined"]
    assert [dict(e.attributes) for e in declined] == [
        {"datapipe.source": "recent", "datapipe.reason": "declined by declines"}]


def test_a_served_page_without_fallback_says_so(spans):
    tracer, exporter = spans
    # a holds limit + 1 rows: the page is complete without b.
    make(InMemoryFetcher([item(1), item(3)], name="a"), InMemoryFetcher([item(2)], name="b"),
         tracer=tracer).execute(PipelineRequest(tenant="t1", limit=1))
    fetch = by_name(exporter)["datapipe.stage.fetch"]
    assert fetch.attributes["datapipe.fallback"] is False
    assert "datapipe.fallback.reason" not in fetch.attributes
    assert [dict(e.attributes) for e in fetch.events] == [
        {"datapipe.source": "b", "datapipe.reason": "page already full"}]


def test_first_success_fallbacks_and_probes_are_marked_on_their_spans(spans):
    tracer, exporter = spans
    make(InMemoryFetcher([], name="a"), InMemoryFetcher([item(2, minutes=2)], name="b"),
         InMemoryFetcher([item(1, minutes=1)], name="c"),
         fallback=FallbackMode.FIRST_SUCCESS, tracer=tracer).execute(tenant="t1", limit=1)
    spans_of = {s.name: s for s in exporter.get_finished_spans()}
    assert "datapipe.fallback.reason" not in spans_of["datapipe.source.a"].attributes
    assert spans_of["datapipe.source.b"].attributes["datapipe.fallback.reason"] == "empty"
    probe = spans_of["datapipe.source.c"].attributes
    assert probe["datapipe.probe"] is True and probe["datapipe.request.size"] == 1


def test_the_cache_outcome_of_a_read_is_on_its_span(spans):
    tracer, exporter = spans

    class Cached(InMemoryFetcher):
        def fetch(self, request):
            result = super().fetch(request)
            return FetchResult(result.items, result.has_more, meta={"cache": "hit"})

    make(Cached([item(1)], name="cached"), tracer=tracer).execute(tenant="t1")
    span = by_name(exporter)["datapipe.source.cached"]
    assert span.attributes["datapipe.cache"] == "hit"
    assert span.attributes["datapipe.cache.hit"] is True


def test_parallel_reads_are_children_of_the_fetch_span_from_their_worker_threads(spans):
    tracer, exporter = spans
    threads = {}

    class Where(InMemoryFetcher):
        def fetch(self, request):
            threads[self.name] = threading.current_thread().name
            return super().fetch(request)

    make(Where([item(1)], name="a"), Where([item(2)], name="b"), Where([item(3)], name="c"),
         fallback=FallbackMode.PARALLEL, tracer=tracer).execute(tenant="t1")
    assert set(threads) == {"a", "b", "c"}
    assert all(name.startswith("datapipe") for name in threads.values())  # the pool's threads
    named = by_name(exporter)
    fetch = named["datapipe.stage.fetch"]
    for source in "abc":
        span = named[f"datapipe.source.{source}"]
        assert span.parent.span_id == fetch.context.span_id
        assert span.context.trace_id == fetch.context.trace_id


def test_a_failed_execution_is_an_error_on_its_spans(spans):
    tracer, exporter = spans
    p = make(InMemoryFetcher(name="a", available=False), tracer=tracer)
    with pytest.raises(SourcesUnavailable):
        p.execute(tenant="t1")
    named = by_name(exporter)
    for name in ("datapipe.pipeline", "datapipe.stage.fetch"):
        assert named[name].status.status_code is StatusCode.ERROR
        assert named[name].attributes["error.type"] == "sources_unavailable"
    assert named["datapipe.source.a"].status.status_code is StatusCode.ERROR


def test_a_client_error_is_not_a_span_error(spans):
    """As for HTTP server spans, a 4xx leaves the status unset: the pipeline did its job."""
    tracer, exporter = spans
    with pytest.raises(ValidationFailed):
        make(InMemoryFetcher(name="a"), tracer=tracer).execute(tenant="t1", limit=0)
    root = by_name(exporter)["datapipe.pipeline"]
    assert root.attributes["error.type"] == "invalid"
    assert root.status.status_code is StatusCode.UNSET
    assert root.events == ()


@pytest.mark.django_db
def test_pipeline_spans_nest_under_the_django_request_span(provider, client, monkeypatch):
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    from tests.testapp.pipelines import items

    sdk_provider, exporter = provider
    monkeypatch.setattr(items, "tracer", OpenTelemetryTracer(tracer_provider=sdk_provider))
    instrumentor = DjangoInstrumentor()
    # The instrumentor inserts its middleware into settings.MIDDLEWARE: keep that local.
    with override_settings(MIDDLEWARE=[]):
        instrumentor.instrument(tracer_provider=sdk_provider)
        try:
            response = client.get("/v1/items?limit=2", HTTP_X_TENANT="t1")
        finally:
            instrumentor.uninstrument()
    assert response.status_code == 200
    named = by_name(exporter)
    request = next(s for s in exporter.get_finished_spans() if s.name.startswith("GET"))
    pipeline = named["datapipe.pipeline"]
    assert pipeline.parent.span_id == request.context.span_id
    assert pipeline.context.trace_id == request.context.trace_id
    assert named["datapipe.source.default"].context.trace_id == request.context.trace_id


# -- metrics -------------------------------------------------------------------------------------

def test_stage_source_execution_and_fallback_metrics(meter):
    metrics, reader = meter
    p = make(InMemoryFetcher([item(1)], name="recent", can_handle=declines),
             InMemoryFetcher([], name="replica", available=False),
             InMemoryFetcher([item(1), item(2, minutes=1)], name="archive"),
             metrics=metrics)
    p.execute(tenant="t1")
    p.execute(tenant="t1")
    stages = {a["datapipe.stage"]: pt.count for a, pt in points(reader, "datapipe.stage.duration")}
    assert stages == {"validate": 2, "fetch": 2, "transform": 2, "enrich": 2, "build": 2}
    [(attrs, execution)] = points(reader, "datapipe.pipeline.duration")
    assert attrs == {"datapipe.pipeline": "obs-test"} and execution.count == 2
    durations = {(a["datapipe.source"], a["datapipe.outcome"]): pt.count
                 for a, pt in points(reader, "datapipe.source.duration")}
    assert durations == {("replica", "unavailable"): 2, ("archive", "ok"): 2}
    errors = {a["datapipe.source"]: pt.value for a, pt in points(reader, "datapipe.source.errors")}
    assert errors == {"replica": 2}
    fell_back = {(a["datapipe.source"], a["datapipe.fallback.reason"]): pt.value
                 for a, pt in points(reader, "datapipe.fallbacks")}
    assert fell_back == {("archive", "unavailable"): 2}  # declining is routing, not fallback
    declined = {a["datapipe.source"]: pt.value
                for a, pt in points(reader, "datapipe.source.declines")}
    assert declined == {"recent": 2}


def test_a_failed_execution_is_measured_with_its_error(meter):
    metrics, reader = meter
    with pytest.raises(SourcesUnavailable):
        make(InMemoryFetcher(name="a", available=False), metrics=metrics).execute(tenant="t1")
    [(attrs, _)] = points(reader, "datapipe.pipeline.duration")
    assert attrs == {"datapipe.pipeline": "obs-test", "error.type": "sources_unavailable"}
    fetch = [a for a, _ in points(reader, "datapipe.stage.duration")
             if a["datapipe.stage"] == "fetch"]
    assert fetch == [{"datapipe.pipeline": "obs-test", "datapipe.stage": "fetch",
                      "error.type": "sources_unavailable"}]


def test_cache_and_enricher_instruments(meter):
    metrics, reader = meter
    for outcome in ("hit", "hit", "stale", "miss", "bypass"):
        metrics.cache("p", "appdb", outcome)
    metrics.enricher("p", "user", "ok", 0.01)
    metrics.enricher("p", "ledger", "failed", 0.02)
    metrics.enricher("p", "ledger", "deadline_exceeded", 0.0)
    hits = {a["datapipe.cache"]: pt.value for a, pt in points(reader, "datapipe.cache.hits")}
    misses = {a["datapipe.cache"]: pt.value for a, pt in points(reader, "datapipe.cache.misses")}
    assert hits == {"hit": 2, "stale": 1} and misses == {"miss": 1, "bypass": 1}
    durations = {(a["datapipe.enricher"], a["datapipe.outcome"]): pt.count
                 for a, pt in points(reader, "datapipe.enricher.duration")}
    assert durations == {("user", "ok"): 1, ("ledger", "failed"): 1}
    failures = {(a["datapipe.enricher"], a["datapipe.outcome"]): pt.value
                for a, pt in points(reader, "datapipe.enrichment.failures")}
    assert failures == {("ledger", "failed"): 1, ("ledger", "deadline_exceeded"): 1}


def test_duration_histograms_have_second_buckets(meter):
    metrics, reader = meter
    metrics.stage("p", "fetch", 0.003, None)
    [(_, point)] = points(reader, "datapipe.stage.duration")
    assert point.explicit_bounds[:3] == (0.0, 0.005, 0.01)
    assert point.bucket_counts[1] == 1


@pytest.mark.django_db
def test_replica_gauges_read_the_replica_status(meter):
    _, reader = meter
    # SQLite has no lag probe: it counts as a replica with no lag.
    with override_settings(DATAPIPE={"REPLICAS": ["default"]}):
        forget_replica_status()
        try:
            lag = points(reader, "datapipe.replica.lag")
            healthy = points(reader, "datapipe.replica.healthy")
        finally:
            forget_replica_status()
    assert [(a, pt.value) for a, pt in lag] == [({"datapipe.replica": "default"}, 0.0)]
    assert [(a, pt.value) for a, pt in healthy] == [({"datapipe.replica": "default"}, 1)]


@pytest.mark.postgres
@pytest.mark.django_db(databases=["primary", "replica"])
def test_replica_lag_gauge_on_the_real_standby(meter):
    require_alias("replica")
    _, reader = meter
    with override_settings(DATAPIPE={"REPLICAS": ["replica"], "REPLICA_MAX_LAG": 30}):
        forget_replica_status()
        try:
            lag = points(reader, "datapipe.replica.lag")
        finally:
            forget_replica_status()
    [(attrs, point)] = lag
    assert attrs == {"datapipe.replica": "replica"}
    assert 0.0 <= point.value < 30


# -- defaults and the no-SDK, no-API cases -------------------------------------------------------

def test_the_default_hooks_are_opentelemetry_when_its_api_is_installed(monkeypatch):
    monkeypatch.setattr(observability, "_defaults", {})
    assert isinstance(default_tracer(), OpenTelemetryTracer)
    assert isinstance(default_metrics(), OpenTelemetryMetrics)
    assert default_tracer() is default_tracer()
    p = make(InMemoryFetcher([item(1)]))
    assert p.tracer is default_tracer() and p.metrics is default_metrics()
    # Without an SDK configured, the global providers are no-ops: execution just works.
    assert [r.pk for r in p.execute(tenant="t1").items] == [1]


def test_the_default_tracer_follows_the_global_provider_even_one_set_later(provider,
                                                                           monkeypatch):
    from opentelemetry import trace

    sdk_provider, exporter = provider
    tracer = OpenTelemetryTracer()
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    with tracer.span("datapipe.pipeline", {}) as span:
        assert not span.is_recording()  # no SDK: nothing is created at all
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", sdk_provider)  # what set_tracer_provider does
    with tracer.span("datapipe.pipeline", {"datapipe.pipeline": "p"}) as span:
        assert span.is_recording()
    assert [s.name for s in exporter.get_finished_spans()] == ["datapipe.pipeline"]


def test_without_the_opentelemetry_api_the_defaults_do_nothing(monkeypatch):
    monkeypatch.setattr(observability, "_defaults", {})
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.setitem(sys.modules, "datapipe_django.otel", None)
    assert isinstance(default_tracer(), NullTracer)
    assert isinstance(default_metrics(), NullMetrics)
    assert [r.pk for r in make(InMemoryFetcher([item(1)])).execute(tenant="t1").items] == [1]


def test_the_core_imports_neither_an_sdk_nor_drf_spectacular():
    """Importing the library, its REST layer and a pipeline (with the OpenTelemetry defaults)
    loads no SDK, exporter or schema generator: those are the project's choice."""
    code = (
        "import os, sys, django\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'tests.settings'\n"
        "django.setup()\n"
        "import datapipe_django, datapipe_django.rest, datapipe_django.middleware\n"
        "from tests.testapp.pipelines import items\n"
        "print(type(items.tracer).__name__)\n"
        "print(sorted(m for m in sys.modules if m.startswith(("
        "'opentelemetry.sdk', 'opentelemetry.exporter', 'prometheus_client'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(Path(__file__).resolve().parent.parent))
    assert out.stdout.split("\n")[:2] == ["OpenTelemetryTracer", "[]"]


def test_a_tracer_may_yield_none_and_metrics_may_lack_the_optional_hooks():
    class MinimalTracer:
        def __init__(self):
            self.names = []

        def span(self, name, attributes):
            import contextlib

            self.names.append(name)
            return contextlib.nullcontext()

    class MinimalMetrics:
        def __init__(self):
            self.calls = []

        def stage(self, pipeline, stage, duration, error):
            self.calls.append(stage)

        def source(self, pipeline, source, outcome, duration):
            self.calls.append(source)

    tracer, metrics = MinimalTracer(), MinimalMetrics()
    p = make(InMemoryFetcher([item(1)], name="a", can_handle=declines),
             InMemoryFetcher([item(1)], name="b"), tracer=tracer, metrics=metrics)
    assert p.execute(tenant="t1").source == "b"
    assert tracer.names[:2] == ["datapipe.pipeline", "datapipe.stage.validate"]
    assert "datapipe.source.b" in tracer.names
    assert "a" in metrics.calls and "fetch" in metrics.calls


# -- the recording tracer and fallbacks() ----------------------------------------------------------

def test_recording_tracer_keeps_the_tree_across_worker_threads():
    tracer = RecordingTracer()
    make(InMemoryFetcher([item(1)], name="a"), InMemoryFetcher([item(2)], name="b"),
         fallback=FallbackMode.PARALLEL, tracer=tracer).execute(tenant="t1")
    [root] = tracer.roots
    tree = [(depth, span.name) for depth, span in root.walk()]
    assert tree[0] == (0, "datapipe.pipeline")
    assert (1, "datapipe.stage.fetch") in tree
    fetch = tracer.find("datapipe.stage.fetch")[0]
    assert sorted(c.name for c in fetch.children) == ["datapipe.source.a", "datapipe.source.b"]
    assert all(c.thread != fetch.thread for c in fetch.children)
    assert all(s.duration is not None and s.duration >= 0 for s in tracer.spans)


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        ([("a", "ok", 11)], []),
        ([("a", "ok", 3), ("b", "ok", 8)], [("a", "b", "incomplete")]),
        ([("a", "declined", 0), ("b", "declined", 0), ("c", "ok", 1)], []),
        ([("a", "unavailable", 0), ("b", "timeout", 0), ("c", "ok", 5)],
         [("a", "b", "unavailable"), ("b", "c", "timeout")]),
        ([("a", "ok", 0), ("b", "ok", 2), ("c", "not_needed", 0)], [("a", "b", "empty")]),
        # Attempts are recorded declines first; priority order decides, and a decline between
        # two sources read is not why the chain went on.
        ([("b", "declined", 0), ("a", "ok", 2), ("c", "ok", 2)],
         [("a", "c", "incomplete")]),
    ],
)
def test_fallbacks_follow_the_priority_order(attempts, expected):
    recorded = [Attempt(s, o, count=n) for s, o, n in attempts]
    assert fallbacks(recorded, ["a", "b", "c"]) == expected


# -- the example project -------------------------------------------------------------------------

def test_the_example_project_exposes_prometheus_metrics():
    """Its settings configure the SDK (telemetry.py): /metrics serves our instruments and the
    Django instrumentation's, in Prometheus' text format."""
    code = (
        "import os, django\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'example_project.settings'\n"
        "django.setup()\n"
        "from django.test.utils import setup_test_environment\n"
        "setup_test_environment()\n"
        "from django.test import Client\n"
        "client = Client()\n"
        "assert client.get('/v1/payouts?limit=0').status_code == 400\n"
        "response = client.get('/metrics')\n"
        "print(response.status_code, response['Content-Type'])\n"
        "print(response.content.decode())\n"
    )
    env = {**os.environ, "DATAPIPE_EXAMPLE_DB": ""}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(Path(__file__).resolve().parent.parent), env=env)
    status, _, body = out.stdout.partition("\n")
    assert status.startswith("200 text/plain")
    assert ('datapipe_pipeline_duration_seconds_count{datapipe_pipeline="payouts",'
            'error_type="invalid"') in body
    assert 'datapipe_stage_duration_seconds_count{datapipe_pipeline="payouts",' in body
    assert "http_server_duration_milliseconds_count{" in body  # the request span's metrics


# -- enrichers -----------------------------------------------------------------------------------

class Tag(BaseEnricher):
    """Sets an attribute on every item (fails when told to)."""

    def __init__(self, name, *, fail=False, **kwargs):
        super().__init__(name, **kwargs)
        self.fail = fail

    def enrich(self, items, context):
        if self.fail:
            raise ConnectionError(f"{self.name} service down")
        for row in items:
            setattr(row, f"tag_{self.name}", True)


@pytest.mark.parametrize("parallel", [False, True])
def test_a_span_and_metrics_per_enricher(spans, meter, parallel):
    tracer, exporter = spans
    metrics, reader = meter
    p = make(InMemoryFetcher([item(1), item(2)]),
             enrichers=[Tag("user"), Tag("ledger", fail=True), Tag("audit", always=True)],
             parallel_enrichment=parallel, tracer=tracer, metrics=metrics)
    result = p.execute(tenant="t1", expand={"user", "ledger"})
    assert result.errors == [{"enricher": "ledger", "code": "failed"}]
    named = by_name(exporter)
    stage = named["datapipe.stage.enrich"]
    for name in ("user", "ledger", "audit"):
        span = named[f"datapipe.enricher.{name}"]
        assert span.parent.span_id == stage.context.span_id
        assert span.attributes["datapipe.enricher"] == name
        assert 0 < span.attributes["datapipe.deadline.remaining"] <= 5.0
    failed = named["datapipe.enricher.ledger"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "ConnectionError"
    assert named["datapipe.enricher.user"].status.status_code is StatusCode.UNSET
    outcomes = {(a["datapipe.enricher"], a["datapipe.outcome"]): pt.count
                for a, pt in points(reader, "datapipe.enricher.duration")}
    assert outcomes == {("user", "ok"): 1, ("ledger", "failed"): 1, ("audit", "ok"): 1}
    failures = {a["datapipe.enricher"]: pt.value
                for a, pt in points(reader, "datapipe.enrichment.failures")}
    assert failures == {"ledger": 1}
