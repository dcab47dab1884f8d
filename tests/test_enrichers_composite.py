"""CompositeEnricher: parallel pool, one deadline, required and optional failures, nested
paths, ``always``; and the enrich stage around it (no database: plain objects and lists)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from types import SimpleNamespace

import pytest
from django.core.exceptions import ImproperlyConfigured

from datapipe_django import DeadlineExceeded, EnrichmentFailed, Pipeline
from datapipe_django.enrichers import BaseEnricher, EnrichContext
from datapipe_django.enrichers.composite import CompositeEnricher
from datapipe_django.test import InMemoryFetcher
from tests.testapp.models import Item

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

#: The longest a gated enricher waits for its gate: far beyond every deadline of these tests
#: (each test opens its gates when it ends, so no worker is left waiting).
GATE_SECONDS = 30


class Sleepy(BaseEnricher):
    """Two-phase: sleeps in ``load`` (the worker), sets ``<name>`` in ``apply`` (the caller).

    ``barrier``: ``load`` first waits there for the other loads sharing it (a load that runs
    alone breaks it, after its timeout). ``gate``: ``load`` first waits for the test to set
    that event (at most :data:`GATE_SECONDS`): "slower than any deadline", without timing.
    ``finished`` is set when ``load`` ends, however it ends.
    """

    def __init__(self, name, delay=0.0, *, fail=None, probe=None, barrier=None, gate=None,
                 **kwargs):
        super().__init__(name, **kwargs)
        self.delay, self.fail, self.probe = delay, fail, probe
        self.barrier, self.gate = barrier, gate
        self.loaded_at = None
        self.finished = threading.Event()

    def runs_inline(self, items, context):
        return False

    def load(self, items, context):
        if self.probe is not None:
            self.probe.enter()
        try:
            if self.barrier is not None:
                self.barrier.wait()
            if self.gate is not None:
                self.gate.wait(GATE_SECONDS)
            time.sleep(self.delay)
            if self.fail is not None:
                raise self.fail
            self.loaded_at = time.monotonic()
            return f"{self.name}!"
        finally:
            if self.probe is not None:
                self.probe.leave()
            self.finished.set()

    def apply(self, items, loaded, context):
        for item in items:
            setattr(item, self.name.replace(".", "_"), loaded)


class OnePhase(BaseEnricher):
    """Only ``enrich``: mutates the items from the worker (after its ``gate``, if any)."""

    def __init__(self, name, delay=0.0, *, gate=None, **kwargs):
        super().__init__(name, **kwargs)
        self.delay, self.gate = delay, gate

    def runs_inline(self, items, context):
        return False

    def enrich(self, items, context):
        if self.gate is not None:
            self.gate.wait(GATE_SECONDS)
        time.sleep(self.delay)
        for item in items:
            setattr(item, self.name, "done")


class Probe:
    """Counts enrichers loading at the same time."""

    def __init__(self):
        self.lock, self.now, self.peak = threading.Lock(), 0, 0

    def enter(self):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self):
        with self.lock:
            self.now -= 1


def context(timeout=None, expand=()):
    return EnrichContext(pipeline="t", expand=frozenset(expand),
                         deadline=time.monotonic() + timeout if timeout is not None else None)


def items(n=3):
    return [SimpleNamespace(id=i) for i in range(n)]


def run(enrichers, *, timeout=None, parallel=True, max_workers=5, page=None):
    composite = CompositeEnricher(enrichers, parallel=parallel, max_workers=max_workers)
    page = page if page is not None else items()
    start = time.monotonic()
    errors = composite.run(page, context(timeout), enrichers)
    return page, errors, time.monotonic() - start


# -- parallelism -------------------------------------------------------------------------------

def test_three_enrichers_run_in_parallel():
    # Each load waits until all three are loading: one at a time, the first would break the
    # barrier (after 5 s) and fail.
    together = threading.Barrier(3, timeout=5)
    page, errors, _ = run([Sleepy(n, barrier=together) for n in "abc"])
    assert errors == []
    assert [(i.a, i.b, i.c) for i in page] == [("a!", "b!", "c!")] * 3


def test_sequential_runs_one_at_a_time_in_declaration_order():
    probe = Probe()
    enrichers = [Sleepy(n, 0.05, probe=probe) for n in "abc"]
    _page, errors, elapsed = run(enrichers, parallel=False, timeout=5)
    assert errors == [] and probe.peak == 1 and elapsed >= 0.15
    assert enrichers[0].loaded_at < enrichers[1].loaded_at < enrichers[2].loaded_at


def test_the_pool_is_bounded_by_max_workers():
    # Loads meet in pairs (two at once, always), then hold 0.1 s: a third one let in meanwhile
    # would raise the peak above 2, and four at once would end in about 0.1 s, not 0.2 s.
    probe, pairs = Probe(), threading.Barrier(2, timeout=5)
    enrichers = [Sleepy(n, 0.1, probe=probe, barrier=pairs) for n in "abcd"]
    page, errors, elapsed = run(enrichers, max_workers=2)
    assert errors == [] and probe.peak == 2
    assert elapsed >= 0.2
    assert all(hasattr(i, "d") for i in page)


def test_without_deadline_or_parallelism_enrichers_run_on_the_calling_thread():
    seen = []

    class Here(BaseEnricher):
        def enrich(self, items, context):
            seen.append(threading.current_thread())

    run([Here("a"), Here("b")], parallel=False)
    assert seen == [threading.current_thread()] * 2


# -- one deadline ------------------------------------------------------------------------------

def test_an_optional_enricher_still_running_at_the_deadline_is_abandoned_and_reported():
    gate = threading.Event()
    slow, fast = Sleepy("slow", gate=gate), Sleepy("fast", 0.01)
    try:
        page, errors, elapsed = run([slow, fast], timeout=0.5)
        # Returns at the deadline: `slow` cannot end before the gate opens (after this).
        assert elapsed < 2.0, elapsed
        assert errors == [{"enricher": "slow", "code": "deadline_exceeded"}]
        assert all(i.fast == "fast!" for i in page)
    finally:
        gate.set()
    assert slow.finished.wait(5)
    assert slow.loaded_at is not None  # `slow` has finished loading now...
    assert not any(hasattr(i, "slow") for i in page)  # ...and never touched the page


def test_a_required_enricher_at_the_deadline_is_a_deadline_exceeded():
    gate = threading.Event()
    start = time.monotonic()
    try:
        with pytest.raises(DeadlineExceeded) as info:
            run([Sleepy("slow", gate=gate, required=True), Sleepy("fast")], timeout=0.2)
        assert time.monotonic() - start < 2.0  # at the deadline, not when `slow` ends
    finally:
        gate.set()
    assert info.value.op == "slow" and info.value.status_code == 504


def test_sequential_enrichment_keeps_the_deadline_too():
    gate = threading.Event()
    c = Sleepy("c")
    try:
        page, errors, elapsed = run([Sleepy("a", 0.05), Sleepy("slow", gate=gate), c],
                                    parallel=False, timeout=0.5)
        assert elapsed < 2.0, elapsed  # at the deadline, not when `slow` ends
    finally:
        gate.set()
    assert errors == [{"enricher": "slow", "code": "deadline_exceeded"},
                      {"enricher": "c", "code": "deadline_exceeded"}]
    assert all(i.a == "a!" and not hasattr(i, "c") for i in page)
    assert c.loaded_at is None


def test_an_enricher_starting_after_the_deadline_is_not_run():
    late = Sleepy("late")
    _page, errors, _ = run([late], timeout=-1, parallel=False)  # the deadline has passed
    assert errors == [{"enricher": "late", "code": "deadline_exceeded"}]
    assert late.loaded_at is None


# -- failures ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("exc", "code"), [
    (ConnectionError("down"), "failed"),
    (TimeoutError("slow service"), "timeout"),
    (type("Coded", (Exception,), {"code": "ledger_down"})(), "ledger_down"),
])
def test_an_optional_failure_is_reported_and_the_rest_is_applied(exc, code):
    page, errors, _ = run([Sleepy("bad", fail=exc), Sleepy("good")], timeout=2)
    assert errors == [{"enricher": "bad", "code": code}]
    assert all(i.good == "good!" and not hasattr(i, "bad") for i in page)


def test_a_required_failure_is_enrichment_failed_with_the_cause():
    cause = ConnectionError("down")
    with pytest.raises(EnrichmentFailed) as info:
        run([Sleepy("bad", fail=cause, required=True)], timeout=2)
    assert info.value.cause is cause and info.value.op == "bad"
    assert info.value.status_code == 502


def test_a_declaration_mistake_is_never_reported_as_an_outage():
    with pytest.raises(ImproperlyConfigured):
        run([Sleepy("bad", fail=ImproperlyConfigured("typo"))], timeout=2)


# -- nested paths ------------------------------------------------------------------------------

def test_a_parent_path_runs_before_the_paths_below_it():
    seen = {}

    class Child(Sleepy):
        def load(self, items, context):
            seen["parent"] = [getattr(i, "a", None) for i in items]
            return super().load(items, context)

    parent, child = Sleepy("a", 0.1), Child("a.b")
    page, errors, _ = run([child, parent], timeout=2)
    assert errors == [] and seen["parent"] == ["a!"] * 3
    assert all(i.a_b == "a.b!" for i in page)


def test_below_a_failed_parent_nothing_runs():
    child = Sleepy("a.b")
    _page, errors, _ = run([Sleepy("a", fail=ConnectionError()), child], timeout=2)
    assert errors == [{"enricher": "a", "code": "failed"},
                      {"enricher": "a.b", "code": "dependency_failed"}]
    assert child.loaded_at is None
    with pytest.raises(EnrichmentFailed):
        run([Sleepy("a", fail=ConnectionError()), Sleepy("a.b", required=True)], timeout=2)


def test_select_takes_asked_always_and_parent_enrichers_allowed_for_the_caller():
    a, ab = Sleepy("a"), Sleepy("a.b")
    private = Sleepy("p", auth_types={"private"})
    below_private = Sleepy("p.q")
    always = Sleepy("always", always=True)
    composite = CompositeEnricher([a, ab, private, below_private, always])
    assert composite.select(frozenset({"a.b"}), "public") == [a, ab, always]
    assert composite.select(frozenset({"p.q"}), "public") == [always]
    assert composite.select(frozenset({"p.q"}), "private") == [private, below_private, always]


# -- through a pipeline ------------------------------------------------------------------------

def rows(n=4):
    return [Item(id=i, tenant="t1", name=f"n{i}", status="queued", amount=i,
                 created_at=BASE + dt.timedelta(minutes=i), day=BASE.date())
            for i in range(1, n + 1)]


def make(enrichers, **kwargs):
    kwargs.setdefault("fetchers", [InMemoryFetcher(rows())])
    return Pipeline("enrich-test", model=Item, enrichers=enrichers, register=False, **kwargs)


def test_result_expand_says_what_was_loaded():
    p = make([Sleepy("a"), Sleepy("a.b", fail=ConnectionError()), Sleepy("c", always=True),
              Sleepy("d")], parallel_enrichment=True)
    result = p.execute(expand={"a.b"})
    assert result.expand == {"a", "c"}  # asked a.b (so a), always c, minus the failed a.b
    assert result.errors == [{"enricher": "a.b", "code": "failed"}]
    assert all(item.c == "c!" for item in result.items)


def test_an_abandoned_one_phase_enricher_is_not_rendered_as_expanded():
    gate = threading.Event()
    p = make([OnePhase("slow", gate=gate), OnePhase("fast")], parallel_enrichment=True,
             timeout=0.5)
    try:
        result = p.execute(expand={"slow", "fast"})
    finally:
        gate.set()
    assert result.expand == {"fast"}
    assert result.errors == [{"enricher": "slow", "code": "deadline_exceeded"}]


def test_every_enricher_outcome_is_reported_to_the_metrics():
    class Recorder:
        def __init__(self):
            self.enrichers = []

        def stage(self, *args):
            pass

        def source(self, *args):
            pass

        def enricher(self, pipeline, name, outcome, duration):
            self.enrichers.append((pipeline, name, outcome, duration))

    metrics = Recorder()
    gate = threading.Event()
    p = make([Sleepy("a", 0.05), Sleepy("a.b", fail=ConnectionError()),
              Sleepy("slow", gate=gate)],
             parallel_enrichment=True, timeout=1.0, metrics=metrics)
    try:
        p.execute(expand={"a.b", "slow"})
    finally:
        gate.set()
    outcomes = {name: (outcome, duration) for _, name, outcome, duration in metrics.enrichers}
    assert {n: o for n, (o, _) in outcomes.items()} == {
        "a": "ok", "a.b": "failed", "slow": "deadline_exceeded"}
    # `slow` ran from about the start of the 1 s budget to its end.
    assert outcomes["a"][1] >= 0.05 and outcomes["slow"][1] >= 0.5
    assert {p for p, *_ in metrics.enrichers} == {"enrich-test"}


def test_a_timeout_at_the_deadline_is_the_deadlines():
    class OwnTimeout(Sleepy):
        """Uses what is left of the deadline as its own timeout, like an HTTP client would."""

        def load(self, items, context):
            time.sleep(context.remaining)
            raise TimeoutError("timed out")

    _page, errors, _ = run([OwnTimeout("svc")], timeout=0.1, parallel=False)
    assert errors == [{"enricher": "svc", "code": "deadline_exceeded"}]
    with pytest.raises(DeadlineExceeded):
        run([OwnTimeout("svc", required=True)], timeout=0.1, parallel=False)


# -- the response's reserve of the deadline ----------------------------------------------------

@pytest.mark.parametrize("timeout", [0.1, 1.0, 2.0, None])  # None: the TIMEOUT default
def test_enrichers_leave_part_of_the_deadline_to_build_the_response(timeout):
    from datapipe_django.conf import datapipe_settings

    seen: dict[str, float] = {}

    class Probe(Sleepy):
        def load(self, items, context):
            seen["enricher"] = context.deadline
            return super().load(items, context)

    kwargs = {} if timeout is None else {"timeout": timeout}
    p = make([Probe("a")], parallel_enrichment=True, **kwargs)
    p.add_stage(lambda state: seen.setdefault("request", state.deadline), name="probe",
                before="enrich")
    p.execute(expand={"a"})
    budget = p.timeout
    assert budget == (timeout if timeout is not None else float(datapipe_settings.TIMEOUT))
    assert seen["request"] - seen["enricher"] == pytest.approx(min(0.05, 0.02 * budget))


def test_an_enricher_abandoned_at_its_deadline_leaves_the_answer_inside_the_requests():
    gate = threading.Event()  # never set before the pipeline returns: a frozen service
    deadline: list[float] = []
    p = make([Sleepy("frozen", gate=gate)], parallel_enrichment=True, timeout=1.0)
    p.add_stage(lambda state: deadline.append(state.deadline), name="probe", before="enrich")
    try:
        result = p.execute(expand={"frozen"})
        returned = time.monotonic()
    finally:
        gate.set()
    assert result.errors == [{"enricher": "frozen", "code": "deadline_exceeded"}]
    # The enrichers' deadline is 20 ms (2 % of 1 s) before the request's: the page is built in
    # that time, so the pipeline returns before the request's deadline, not after it.
    assert returned <= deadline[0]


# -- where an enricher runs: this thread or the pool -------------------------------------------

class Where(Sleepy):
    """A Sleepy whose reads honour the deadline (as a PrefetchEnricher's queries do); it
    records the thread its ``load`` ran on."""

    honours_deadline = True

    def __init__(self, name, **kwargs):
        super().__init__(name, **kwargs)
        self.thread = None

    def load(self, items, context):
        self.thread = threading.current_thread()
        return super().load(items, context)


@pytest.mark.parametrize("parallel", [True, False])
def test_an_enricher_that_honours_the_deadline_runs_here_when_the_page_needs_only_it(parallel):
    alone = Where("a")
    page, errors, _ = run([alone], timeout=30, parallel=parallel)
    assert errors == [] and [i.a for i in page] == ["a!"] * 3
    assert alone.thread is threading.current_thread()
    # One that does not say so runs on the pool (the deadline must be able to abandon it).
    other = Where("b")
    other.honours_deadline = False
    page, errors, _ = run([other], timeout=30, parallel=parallel)
    assert errors == [] and [i.b for i in page] == ["b!"] * 3
    assert other.thread not in (None, threading.current_thread())


def test_near_the_deadline_it_runs_on_the_pool_which_the_deadline_can_abandon():
    gate = threading.Event()
    late = Where("a", gate=gate)
    try:
        page, errors, _ = run([late], timeout=0.02)  # less than _INLINE_MARGIN is left
    finally:
        gate.set()
    assert late.thread is not threading.current_thread()
    assert errors == [{"enricher": "a", "code": "deadline_exceeded"}]
    assert not any(hasattr(i, "a") for i in page)


def test_in_parallel_this_thread_takes_one_share_and_the_pool_the_others():
    together = threading.Barrier(3, timeout=5)  # all three load at once, or one fails
    enrichers = [Where(n, barrier=together) for n in "abc"]
    page, errors, _ = run(enrichers, timeout=30)
    assert errors == [] and [(i.a, i.b, i.c) for i in page] == [("a!", "b!", "c!")] * 3
    here = [e.name for e in enrichers if e.thread is threading.current_thread()]
    assert here == ["c"]


def test_an_enricher_that_ran_here_past_the_deadline_is_reported_and_not_applied():
    class Overrun(Where):
        def load(self, items, context):
            loaded = super().load(items, context)
            while context.remaining != 0.0:  # its work outlasts the deadline
                time.sleep(0.005)
            return loaded

    for required in (False, True):
        overrun, below = Overrun("a", required=required), Where("a.b")
        composite = CompositeEnricher([overrun, below], parallel=True)
        page = items()
        if required:
            with pytest.raises(DeadlineExceeded):
                composite.run(page, context(0.2), [overrun, below])
        else:
            errors = composite.run(page, context(0.2), [overrun, below])
            assert errors == [{"enricher": "a", "code": "deadline_exceeded"},
                              {"enricher": "a.b", "code": "deadline_exceeded"}]
        assert overrun.thread is threading.current_thread() and below.thread is None
        assert not any(hasattr(i, "a") for i in page)


def test_a_query_that_loads_the_relation_below_too_is_told_which():
    seen = {}

    class Host(Where):
        def join_below(self, child):
            return child.name == "a.b"

        def load(self, items, context):
            seen[self.name] = context.joins
            return super().load(items, context)

    class Guest(Where):
        def load(self, items, context):
            seen[self.name] = context.joins
            return super().load(items, context)

    enrichers = [Host("a"), Guest("a.b"), Guest("a.c"), Host("d")]
    _, errors, _ = run(enrichers, timeout=30)
    assert errors == []
    assert seen == {"a": ("a.b",), "a.b": (), "a.c": (), "d": ()}
