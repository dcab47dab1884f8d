"""``datapipe_django._internal.breaker``: the one breaker (timed probe, cooldown, background
probe) that the cache, the stores and the search engine share, on plain objects."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datapipe_django._internal import breaker as breaker_module
from datapipe_django._internal.breaker import (
    BackgroundProbe,
    Breaker,
    Breakers,
    Cooldown,
    TimedProbe,
)


@pytest.fixture
def clock(monkeypatch):
    """The breakers' clock, moved only by the test."""
    now = [100.0]
    monkeypatch.setattr(breaker_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


# -- the breaker -------------------------------------------------------------------------------

def test_a_timed_probe_refuses_then_lets_one_caller_probe(clock, caplog):
    caplog.set_level(logging.WARNING, "tests.breaker")
    breaker = Breaker("redis", TimedProbe(0.5), label="Cache",
                      logger=logging.getLogger("tests.breaker"))
    assert breaker.allow() and not breaker.is_open
    breaker.failed(ConnectionRefusedError(111, "refused"))
    assert breaker.is_open and breaker.failures == 1
    assert breaker.last_error.startswith("ConnectionRefusedError")
    assert "Cache 'redis' is unavailable (ConnectionRefusedError" in caplog.text
    assert "answering without it for 0.5s" in caplog.text
    clock[0] += 0.4
    assert not breaker.allow()
    clock[0] += 0.2
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # one at a time
    breaker.release_probe()  # the probe made no call
    assert breaker.allow()
    breaker.failed("still down")  # the probe failed: open again for 0.5 s
    assert not breaker.allow()
    clock[0] += 0.6
    assert breaker.allow()
    breaker.succeeded()
    assert not breaker.is_open and breaker.allow() and breaker.allow()
    assert "Cache 'redis' is reachable again; using it." in caplog.text


def test_a_cooldown_closes_by_itself_and_restarts_with_each_failure(clock):
    seconds = [2.0]
    breaker = Breaker("search", Cooldown(lambda: seconds[0]))
    breaker.failed("connection failed")
    clock[0] += 1.5
    breaker.failed("connection failed again")  # the cooldown starts again
    clock[0] += 1.0
    assert not breaker.allow() and breaker.last_error == "connection failed again"
    assert breaker.failed_at == clock[0] - 1.0
    clock[0] += 1.0
    assert breaker.allow() and breaker.allow()  # every caller: no single probe
    assert not breaker.is_open
    seconds[0] = 0  # no cooldown: a failure never refuses anyone
    breaker.failed("down")
    assert breaker.allow()


def test_a_background_probe_closes_the_breaker_when_the_dependency_answers(caplog):
    caplog.set_level(logging.WARNING, "tests.breaker")
    answers = iter([False, False, True])
    asked, recovered = [], threading.Event()

    def reachable():
        asked.append(1)
        return next(answers)

    breaker = Breaker("db", BackgroundProbe(reachable, interval=0.01,
                                            on_recover=recovered.set,
                                            meanwhile="reads skip it until it answers"),
                      label="Database", logger=logging.getLogger("tests.breaker"),
                      resume="reading it")
    breaker.failed("OperationalError: connection refused")
    breaker.failed("OperationalError: connection refused")  # open already: no second prober
    assert not breaker.allow() and breaker.failures == 2
    assert recovered.wait(5)
    for thread in threading.enumerate():
        if thread.name == "datapipe-probe-db":
            thread.join(5)
    assert not breaker.is_open and breaker.allow()
    assert len(asked) == 3
    assert caplog.text.count("Database 'db' is unavailable") == 1
    assert "reads skip it until it answers" in caplog.text
    assert "Database 'db' is reachable again; reading it." in caplog.text


@given(st.lists(st.tuples(st.sampled_from(["fail", "succeed", "allow", "release"]),
                          st.floats(0, 1.0)), max_size=40))
def test_a_timed_probe_admits_no_caller_early_and_one_probe_at_a_time(events):
    """Whatever happens in whatever order: while open, nobody is admitted before the open
    period ends, and no second caller while a probe is out."""
    now = [0.0]
    original = breaker_module.time
    breaker_module.time = SimpleNamespace(monotonic=lambda: now[0])  # type: ignore[assignment]
    try:
        breaker = Breaker("x", TimedProbe(0.5))
        probe_out = False
        last_failure = None
        for event, advance in events:
            now[0] += advance
            if event == "fail":
                breaker.failed("down")
                last_failure, probe_out = now[0], False
            elif event == "succeed":
                breaker.succeeded()
                last_failure, probe_out = None, False
            elif event == "release":
                breaker.release_probe()
                probe_out = False
            elif breaker.allow() and last_failure is not None:
                assert now[0] >= last_failure + 0.5 and not probe_out
                probe_out = True
            assert breaker.is_open == (last_failure is not None)
    finally:
        breaker_module.time = original


# -- one breaker per name ----------------------------------------------------------------------

def test_breakers_make_one_breaker_per_name_whatever_the_threads():
    made = []

    def make(name):
        made.append(name)
        return Breaker(name, TimedProbe(0.5))

    breakers = Breakers(make)
    start = threading.Barrier(8)
    got: list[Breaker] = []

    def get():
        start.wait()
        got.append(breakers.get("redis"))

    threads = [threading.Thread(target=get) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(b) for b in got}) == 1 and got[0].name == "redis"
    assert breakers.get("other") is not got[0]
    assert {b.name for b in breakers.values()} == {"redis", "other"}
    got[0].failed("down")
    breakers.clear()
    assert not breakers.values() and not breakers.get("redis").is_open


def test_an_error_is_recorded_as_failure_reason_says_it(clock):
    breaker = Breaker("default", TimedProbe(0.5), label="Database",
                      logger=logging.getLogger("tests.breaker"))
    breaker.failed(OSError("connection refused\nDETAIL: is the server running?"))
    assert breaker.last_error == "OSError: connection refused"  # one line, for logs and 503s
    breaker.failed(TimeoutError())
    assert breaker.last_error == "TimeoutError"
