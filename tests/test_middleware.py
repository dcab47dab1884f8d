"""The built-in stage middleware: structured logging, timing, recovery of optional stages."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from django.core.exceptions import ImproperlyConfigured

from datapipe_django import (
    DeadlineExceeded,
    Pipeline,
    PipelineRequest,
    SourcesUnavailable,
    ValidationFailed,
)
from datapipe_django.middleware import LoggingMiddleware, RecoveryMiddleware, TimingMiddleware
from datapipe_django.observability import NullMetrics, NullTracer
from datapipe_django.test import InMemoryFetcher
from tests.testapp.models import Item

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def item(pk: int) -> Item:
    return Item(id=pk, tenant="t1", name=f"n{pk}", status="queued", amount=pk,
                created_at=BASE + dt.timedelta(minutes=pk), day=BASE.date())


def declines(request):
    return False


def make(*fetchers, middleware=(), **kwargs) -> Pipeline:
    fetchers = fetchers or (InMemoryFetcher([item(1), item(2), item(3)], name="appdb"),)
    return Pipeline("mw-test", model=Item, fetchers=list(fetchers), tenant_field="tenant",
                    ordering=("-created_at", "-id"), register=False, middleware=middleware,
                    tracer=NullTracer(), metrics=NullMetrics(), **kwargs)


def records(caplog, name="datapipe_django.pipeline"):
    return [r for r in caplog.records if r.name == name]


# -- LoggingMiddleware -----------------------------------------------------------------------------

def test_one_line_per_execution_with_the_sources_tried_and_why(caplog):
    caplog.set_level(logging.INFO, logger="datapipe_django")
    p = make(InMemoryFetcher([item(1)], name="recent", can_handle=declines),
             InMemoryFetcher([item(1), item(2)], name="archive"),
             InMemoryFetcher([item(1)], name="search"),
             middleware=[LoggingMiddleware()])
    p.execute(PipelineRequest(tenant="t1", limit=1, auth_type="public"))
    [record] = records(caplog)
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert message.startswith("mw-test list: 1 items from archive in ")
    assert "recent declined: declined by declines" in message
    assert "archive ok 2 rows" in message
    assert "search not_needed: page already full" in message
    fields = record.datapipe
    assert fields["pipeline"] == "mw-test" and fields["operation"] == "list"
    assert fields["tenant"] == "t1" and fields["auth_type"] == "public"
    assert fields["items"] == 1 and fields["has_more"] is True
    assert fields["served_by"] == ["archive"]
    assert [(s["source"], s["outcome"]) for s in fields["sources"]] == [
        ("recent", "declined"), ("archive", "ok"), ("search", "not_needed")]
    assert set(fields["stages_ms"]) == {"validate", "fetch", "transform", "enrich", "build"}
    assert fields["duration_ms"] >= max(fields["stages_ms"].values())
    assert fields["error"] is None and fields["status"] == 200


def test_a_degraded_page_is_a_warning(caplog):
    caplog.set_level(logging.INFO, logger="datapipe_django")
    p = make(InMemoryFetcher(name="appdb", available=False),
             InMemoryFetcher([item(1)], name="archive"), middleware=[LoggingMiddleware()])
    p.execute(tenant="t1")
    [record] = records(caplog)
    assert record.levelno == logging.WARNING
    assert "appdb unavailable: switched off" in record.getMessage()


@pytest.mark.parametrize(
    ("pipeline_kwargs", "request_kwargs", "error", "level", "status"),
    [
        ({}, {"limit": 0}, ValidationFailed, logging.WARNING, 400),
        ({"fetchers": [InMemoryFetcher(name="a", available=False)]}, {}, SourcesUnavailable,
         logging.ERROR, 503),
    ],
)
def test_a_failed_execution_is_logged_once_with_its_error(caplog, pipeline_kwargs,
                                                          request_kwargs, error, level, status):
    caplog.set_level(logging.INFO, logger="datapipe_django")
    fetchers = pipeline_kwargs.pop("fetchers", ())
    p = make(*fetchers, middleware=[LoggingMiddleware()])
    with pytest.raises(error):
        p.execute(tenant="t1", **request_kwargs)
    [record] = records(caplog)
    assert record.levelno == level
    assert record.datapipe["status"] == status
    assert record.datapipe["error"] == error.default_code
    assert f"failed: {error.default_code}" in record.getMessage()
    if error is ValidationFailed:
        assert record.datapipe["invalid"] == ["limit"]
        assert record.getMessage().endswith(" ms (invalid: limit)")


def test_an_unexpected_exception_is_an_error_line(caplog):
    caplog.set_level(logging.INFO, logger="datapipe_django")

    def broken(items, state):
        raise TypeError("a bug")

    p = make(middleware=[LoggingMiddleware()], transformers=[broken])
    with pytest.raises(TypeError):
        p.execute(tenant="t1")
    [record] = records(caplog)
    assert record.levelno == logging.ERROR and record.datapipe["error"] == "TypeError"
    assert record.exc_info is None  # the traceback is for whoever handles the exception


def test_nothing_is_logged_below_the_logger_level(caplog):
    caplog.set_level(logging.WARNING, logger="datapipe_django")
    make(middleware=[LoggingMiddleware()]).execute(tenant="t1")
    assert records(caplog) == []


def test_a_custom_last_stage_still_gives_one_line(caplog):
    caplog.set_level(logging.INFO, logger="custom.logger")

    def audit(state):
        state.extra["audited"] = True

    p = make(middleware=[LoggingMiddleware("custom.logger")]).add_stage(audit)
    p.execute(tenant="t1")
    [record] = records(caplog, "custom.logger")
    assert "audit" in record.datapipe["stages_ms"]


# -- TimingMiddleware ------------------------------------------------------------------------------

def test_slow_stages_are_warned_about(caplog):
    caplog.set_level(logging.INFO, logger="datapipe_django")
    make(middleware=[TimingMiddleware(slow=0.0)]).execute(tenant="t1")
    warned = [r.datapipe["stage"] for r in records(caplog, "datapipe_django.timing")]
    assert warned == ["validate", "fetch", "transform", "enrich", "build"]
    caplog.clear()
    make(middleware=[TimingMiddleware(slow={"fetch": 0.0, "build": 60})]).execute(tenant="t1")
    [record] = records(caplog, "datapipe_django.timing")
    assert record.datapipe["stage"] == "fetch" and record.levelno == logging.WARNING
    assert record.getMessage().startswith("mw-test: stage fetch took ")


# -- RecoveryMiddleware ----------------------------------------------------------------------------

def test_an_optional_stage_may_fail_and_the_execution_goes_on(caplog):
    caplog.set_level(logging.INFO, logger="datapipe_django")

    def audit(state):
        raise ConnectionError("audit service down")

    p = make(middleware=[LoggingMiddleware(), TimingMiddleware(slow=60),
                         RecoveryMiddleware("audit")]).add_stage(audit, before="build")
    result = p.execute(tenant="t1")
    assert [r.pk for r in result.items] == [3, 2, 1]
    [recovery] = records(caplog, "datapipe_django.recovery")
    assert recovery.exc_info is not None
    # The logging middleware, outermost, saw the execution go on and says what was skipped.
    [line] = records(caplog)
    assert line.levelno == logging.WARNING
    assert line.datapipe["recovered"] == [{"stage": "audit", "error": "ConnectionError"}]
    assert line.getMessage().endswith("recovered: audit ConnectionError")


def test_recovery_never_swallows_a_pipeline_error_or_other_stages():
    def late(state):
        raise DeadlineExceeded("too late")

    def other(state):
        raise RuntimeError("not optional")

    p = make(middleware=[RecoveryMiddleware("late")]).add_stage(late)
    with pytest.raises(DeadlineExceeded):
        p.execute(tenant="t1")
    p = make(middleware=[RecoveryMiddleware("late")]).add_stage(other)
    with pytest.raises(RuntimeError):
        p.execute(tenant="t1")


@pytest.mark.parametrize(("stages", "message"), [
    ((), "name the optional stages"),
    (("fetch", "audit"), "the fetch stage cannot be optional"),
])
def test_recovery_declaration_mistakes(stages, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        RecoveryMiddleware(*stages)
