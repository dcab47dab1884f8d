"""The shared mechanisms of ``datapipe_django._internal``, on plain objects (no server)."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import pytest
from django.db import connection, transaction
from hypothesis import given
from hypothesis import strategies as st

from datapipe_django._internal import breaker as breaker_module
from datapipe_django._internal import oncommit
from datapipe_django._internal.breaker import BackgroundProbe, Breaker, Cooldown, TimedProbe


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


# -- on commit ---------------------------------------------------------------------------------

class Work:
    """An on-commit callback collecting items; ``runs`` counts its calls."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self.runs = 0

    def __call__(self) -> None:
        self.runs += 1


def add(item: int, **kwargs) -> Work:
    work, _ = oncommit.batch("default", Work, lambda c: isinstance(c, Work), **kwargs)
    work.items.append(item)
    return work


@pytest.mark.django_db(transaction=True)
def test_writes_of_one_transaction_share_one_callback_run_once_on_commit():
    assert oncommit.waiting(connection) == []  # autocommit: nothing waits
    with transaction.atomic():
        first = add(1)
        connection.on_commit(lambda: None)  # someone else's callback in between
        assert add(2) is first
        assert [c for c in oncommit.waiting(connection) if isinstance(c, Work)] == [first]
        assert add(3, newest_only=True) is not first  # the newest callback is not a Work
    assert first.items == [1, 2] and first.runs == 1


@pytest.mark.django_db(transaction=True)
def test_a_savepoint_gets_its_own_callback_and_a_rollback_drops_it():
    with transaction.atomic():
        outer = add(1, this_level=True)
        try:
            with transaction.atomic():
                inner = add(2, this_level=True)
                assert inner is not outer
                assert oncommit.waiting(connection, this_level=True) == [inner]
                raise RuntimeError("roll the savepoint back")
        except RuntimeError:
            pass
        assert oncommit.waiting(connection) == [outer]
        assert add(3) is outer  # joined at the outer level again
        with transaction.atomic():
            assert add(4) is outer  # without this_level, any level joins
    assert (outer.items, outer.runs, inner.runs) == ([1, 3, 4], 1, 0)


# -- counters ----------------------------------------------------------------------------------

def test_counters_count_by_name_from_many_threads():
    from datapipe_django.cache.stats import CacheStats
    from datapipe_django.search.sync import SyncStats

    stats = CacheStats()

    def count():
        for _ in range(1000):
            stats.incr("hits")
            stats.add(misses=2, errors=1)

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stats.as_dict() == {**dict.fromkeys(CacheStats.NAMES, 0),
                               "hits": 4000, "misses": 8000, "errors": 4000}
    assert stats["hits"] == stats.hits == 4000
    with pytest.raises(KeyError):
        stats.incr("hit")
    with pytest.raises(AttributeError):
        stats.hit  # noqa: B018
    stats.reset()
    assert set(stats.as_dict().values()) == {0}
    sync = SyncStats()
    sync.add(indexed=3, failures=1)
    assert (sync.indexed, sync.deleted, sync.failures, sync.recorded) == (3, 0, 1, 0)
    assert repr(sync) == "SyncStats({'indexed': 3, 'deleted': 0, 'failures': 1, 'recorded': 0})"
    assert sync == SyncStats(indexed=3, failures=1) != SyncStats()  # as the dataclass compared


def test_an_otel_counter_is_made_once_per_name_through_otel():
    from datapipe_django._internal.counters import otel_counter

    one = otel_counter("datapipe.test.counter", unit="{x}", description="A test counter.")
    assert one is not None and hasattr(one, "add")
    assert otel_counter("datapipe.test.counter", unit="{x}", description="Again.") is one
