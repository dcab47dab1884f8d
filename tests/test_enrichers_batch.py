"""BatchEnricher: DataLoader semantics (dedup, None keys, chunks, concurrency, per-request
memo, missing keys, failures) and ``run_chunks`` (no database)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from concurrent.futures import Future

import pytest
from django.core.exceptions import ImproperlyConfigured

from datapipe_django import EnrichmentFailed, Pipeline
from datapipe_django.conf import datapipe_settings
from datapipe_django.enrichers import BatchEnricher, EnrichContext
from datapipe_django.enrichers.batch import ServiceUnavailable, run_chunks
from datapipe_django.errors import DeadlineExceeded
from datapipe_django.test import InMemoryFetcher
from tests.testapp.models import Item

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class Service:
    """A fake remote service: records every call, answers ``{key: "v<key>"}`` for known keys.

    ``meet=n``: the first ``n`` calls wait until all ``n`` are in progress (5 s at most, then
    they fail): proof that they ran at the same time. ``gate``: every call first waits for the
    test to set that event (at most 30 s): a service slower than any deadline, without timing.
    """

    def __init__(self, known=None, delay=0.0, fail=None, meet=0, gate=None):
        self.known, self.delay, self.fail = known, delay, fail
        self.meeting = threading.Barrier(meet, timeout=5) if meet else None
        self.gate = gate
        self.calls: list[list] = []
        self.lock = threading.Lock()
        self.active = self.peak = 0

    def get_many(self, keys):
        with self.lock:
            self.calls.append(list(keys))
            meets = self.meeting is not None and len(self.calls) <= self.meeting.parties
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if meets:
                self.meeting.wait()
            if self.gate is not None:
                self.gate.wait(30)
            time.sleep(self.delay)
            if self.fail is not None:
                raise self.fail
            return {k: f"v{k}" for k in keys if self.known is None or k in self.known}
        finally:
            with self.lock:
                self.active -= 1


def rows(scores):
    return [Item(id=i, tenant="t1", name=f"n{i}", status="queued", amount=i, score=score,
                 created_at=BASE + dt.timedelta(minutes=i), day=BASE.date())
            for i, score in enumerate(scores, start=1)]


def make(enrichers, scores=(1, 2, 2, None, 3, 1), **kwargs):
    return Pipeline("batch-test", model=Item, fetchers=[InMemoryFetcher(rows(scores))],
                    ordering=("id",), enrichers=enrichers, register=False, **kwargs)


def test_keys_are_deduplicated_none_skipped_and_missing_keys_give_none():
    service = Service(known={1, 2})
    p = make([BatchEnricher("extra", key="score", load=service.get_many)])
    result = p.execute(expand={"extra"})
    assert service.calls == [[1, 2, 3]]
    assert [i.extra for i in result.items] == ["v1", "v2", "v2", None, None, "v1"]
    assert result.errors == [] and result.expand == {"extra"}


def test_keys_are_sent_in_chunks_of_batch_size():
    service = Service()
    p = make([BatchEnricher("extra", key=lambda item: item.pk, load=service.get_many,
                            batch_size=4)], scores=range(10))
    result = p.execute(expand={"extra"}, limit=10)
    assert sorted(map(tuple, service.calls)) == [(1, 2, 3, 4), (5, 6, 7, 8), (9, 10)]
    assert [i.extra for i in result.items] == [f"v{i}" for i in range(1, 11)]


def test_chunks_run_concurrently_within_the_enrichers_share_of_workers():
    # The four calls wait for each other: run one after the other, the first would fail.
    service = Service(meet=4)
    p = make([BatchEnricher("extra", key="pk", load=service.get_many, batch_size=2)],
             scores=range(8), parallel_enrichment=True, max_workers=4)
    result = p.execute(expand={"extra"})
    assert result.errors == []
    assert len(service.calls) == 4 and service.peak == 4
    assert [i.extra for i in result.items] == [f"v{i}" for i in range(1, 9)]


def test_max_workers_caps_the_chunks_in_flight():
    service = Service(delay=0.05, meet=2)  # the first two calls surely overlap
    p = make([BatchEnricher("extra", key="pk", load=service.get_many, batch_size=1,
                            max_workers=2)], scores=range(6), parallel_enrichment=True,
             max_workers=8)
    p.execute(expand={"extra"})
    assert len(service.calls) == 6 and service.peak == 2


def test_results_are_memoised_for_one_request_only():
    service = Service()
    p = make([BatchEnricher("a", key="score", load=service.get_many),
              BatchEnricher("b", key="pk", load=service.get_many)], parallel_enrichment=False)
    p.execute(expand={"a", "b"})
    # `b` asked for 1..6, of which 1, 2, 3 were loaded by `a` in this request.
    assert service.calls == [[1, 2, 3], [4, 5, 6]]
    p.execute(expand={"a"})
    assert service.calls[-1] == [1, 2, 3]  # a new request loads again


def test_a_failure_is_reported_and_nothing_is_set():
    p = make([BatchEnricher("extra", key="score", load=Service(fail=OSError("refused")).get_many)])
    result = p.execute(expand={"extra"})
    assert result.errors == [{"enricher": "extra", "code": "failed"}]
    assert result.expand == set()
    assert not any(hasattr(i, "extra") for i in result.items)


def test_a_required_failure_is_a_502():
    p = make([BatchEnricher("extra", key="score", required=True,
                            load=Service(fail=OSError("refused")).get_many)])
    with pytest.raises(EnrichmentFailed) as info:
        p.execute(expand={"extra"})
    assert info.value.status_code == 502 and isinstance(info.value.cause, OSError)


def test_a_load_that_does_not_answer_a_mapping_is_a_failure():
    p = make([BatchEnricher("extra", key="score", load=lambda keys: [1, 2, 3])])
    assert p.execute(expand={"extra"}).errors == [{"enricher": "extra", "code": "failed"}]


def test_requires_context_passes_the_deadline_and_tenant():
    seen = []

    def load(keys, context):
        seen.append((context.tenant, context.remaining))
        return {}

    load.requires_context = True
    p = make([BatchEnricher("extra", key="score", load=load)], timeout=2.0)
    p.execute(expand={"extra"}, tenant=None)
    assert len(seen) == 1 and 0 < seen[0][1] <= 2.0


def test_the_deadline_abandons_a_slow_service():
    gate = threading.Event()  # the service answers once the test has its result
    service = Service(gate=gate)
    p = make([BatchEnricher("extra", key="pk", load=service.get_many, batch_size=2)],
             timeout=0.2, parallel_enrichment=True)
    start = time.monotonic()
    try:
        result = p.execute(expand={"extra"})
        assert time.monotonic() - start < 2.0  # at the deadline, not when the service answers
    finally:
        gate.set()
    assert result.errors == [{"enricher": "extra", "code": "deadline_exceeded"}]
    deadline = time.monotonic() + 5
    while service.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.calls and not service.active  # the service has answered by now...
    assert not any(hasattr(i, "extra") for i in result.items)  # ...and nothing was set


# -- run_chunks --------------------------------------------------------------------------------

def context(timeout=None):
    return EnrichContext(pipeline="t", expand=frozenset(),
                         deadline=time.monotonic() + timeout if timeout else None)


def test_a_pool_that_never_starts_the_chunks_cannot_deadlock_the_batch():
    def never(fn, *args):
        return Future()  # a saturated pool: nothing submitted ever starts

    here = threading.current_thread()
    threads = []

    def fn(chunk):
        threads.append(threading.current_thread())
        return sum(chunk)

    assert run_chunks(fn, [[1], [2, 3], [4]], workers=3, context=context(1), submit=never) == [
        1, 5, 4]
    assert threads == [here] * 3


def test_run_chunks_raises_deadline_exceeded_when_chunks_outlive_the_deadline():
    with pytest.raises(DeadlineExceeded):
        run_chunks(lambda c: time.sleep(0.3 if c != [3] else 0), [[1], [2], [3]], workers=3,
                   context=context(0.1))


# -- declaration -------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"key": 3}, "`key` must be"),
    ({"load": "nope"}, "`load` must be"),
    ({"batch_size": 0}, "`batch_size`"),
    ({"max_workers": 0}, "`max_workers`"),
    ({"name": "a.b"}, "cannot contain dots"),
])
def test_declaration_mistakes_are_improperly_configured(kwargs, message):
    args = {"name": "x", "key": "pk", "load": dict, **kwargs}
    with pytest.raises(ImproperlyConfigured, match=message):
        BatchEnricher(args.pop("name"), **args)


def test_a_late_chunk_run_on_this_thread_abandons_the_rest_of_the_batch():
    def never(fn, *args):
        return Future()  # no pool thread ever picks the chunk up: this thread runs each one

    calls = []

    def slow(chunk):
        calls.append(chunk)
        time.sleep(0.2)

    with pytest.raises(DeadlineExceeded):
        run_chunks(slow, [[1], [2], [3]], workers=3, context=context(0.1), submit=never)
    assert len(calls) == 1  # the first local chunk outlived the deadline: nothing else ran


# -- the service's breaker -----------------------------------------------------------------------

def test_a_failing_service_is_skipped_for_a_moment_then_probed_again():
    calls = []
    healthy = threading.Event()

    def load(keys):
        calls.append(list(keys))
        if not healthy.is_set():
            raise ConnectionError("refused")
        return {k: k * 10 for k in keys}

    enricher = BatchEnricher("x", key="pk", load=load)
    context = EnrichContext(pipeline="p", expand=frozenset({"x"}))
    with pytest.raises(ConnectionError):
        enricher.load_many([1], context)
    assert enricher.breaker.is_open
    with pytest.raises(ServiceUnavailable) as info:  # not called: skipped at once
        enricher.load_many([2], context)
    assert info.value.code == "unavailable" and calls == [[1]]
    healthy.set()
    time.sleep(datapipe_settings.ENRICH_BREAKER_SECONDS + 0.05)
    assert enricher.load_many([3], context) == {3: 30}  # the probe closes it
    assert not enricher.breaker.is_open


def test_a_call_made_while_the_service_was_down_does_not_reopen_it_once_it_answered():
    gate = threading.Event()
    first = threading.Event()

    def load(keys):
        if not first.is_set():  # the call that was made while the service hung
            first.set()
            gate.wait(5)
            raise TimeoutError("timed out")
        return {k: k for k in keys}

    enricher = BatchEnricher("x", key="pk", load=load)
    context = EnrichContext(pipeline="p", expand=frozenset({"x"}))
    failures = []

    def hung():
        try:
            enricher.load_many([1], context)
        except TimeoutError as exc:
            failures.append(exc)

    thread = threading.Thread(target=hung)
    thread.start()
    assert first.wait(5)
    assert enricher.load_many([2], context) == {2: 2}  # the service answers again
    gate.set()
    thread.join(5)
    assert len(failures) == 1
    assert not enricher.breaker.is_open  # the late failure of the old call changes nothing
