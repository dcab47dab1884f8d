"""``datapipe_django.executor``: the one bounded pool, sized by ``MAX_WORKERS``, running each
task in a copy of the caller's context and returning its thread's connections."""

from __future__ import annotations

import contextvars
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connections
from django.test import override_settings

from datapipe_django.conf import datapipe_settings
from datapipe_django.executor import Scheduler, get_executor, submit
from tests.conftest import require_alias

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def test_a_task_runs_on_the_pool_in_a_copy_of_the_callers_context() -> None:
    token = request_id.set("r-1")
    try:
        future = submit(lambda: (request_id.get(), threading.current_thread().name))
        seen, thread = future.result(timeout=5)
    finally:
        request_id.reset(token)
    assert seen == "r-1"
    assert thread.startswith("datapipe")


def test_a_task_cannot_change_the_callers_context() -> None:
    submit(request_id.set, "changed").result(timeout=5)
    assert request_id.get() == "none"


def test_the_pool_is_sized_by_max_workers_and_recreated_when_it_changes() -> None:
    with override_settings(DATAPIPE={"MAX_WORKERS": 3}):
        pool = get_executor()
        assert pool._max_workers == 3
        assert get_executor() is pool
        with override_settings(DATAPIPE={"MAX_WORKERS": 2}):
            assert get_executor()._max_workers == 2
    assert get_executor()._max_workers == datapipe_settings.MAX_WORKERS


def test_an_exception_reaches_the_caller() -> None:
    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        submit(fail).result(timeout=5)


@pytest.mark.django_db(databases=["default", "primary"])
def test_a_task_returns_its_threads_connections() -> None:
    require_alias("primary")

    def query() -> Any:
        connection = connections["primary"]  # this worker thread's own connection
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert connection.connection is not None
        return connection

    connection = submit(query).result(timeout=5)
    assert connection.connection is None  # closed as Django's request cycle closes it


# -- Scheduler: one call's work on the pool and on the calling thread, within one deadline --

#: Far beyond every deadline of these tests (each test opens its gates when it ends).
GATE_SECONDS = 30


def test_what_runs_here_and_on_the_pool_comes_back_alike():
    scheduler: Scheduler[str] = Scheduler(None)
    scheduler.start("pool", lambda: threading.current_thread())
    scheduler.run_here("here", lambda: threading.current_thread())
    scheduler.run_here("broken", lambda: 1 / 0)
    finished = dict(scheduler.wait())  # what ran here: at once
    assert set(finished) == {"here", "broken"}
    assert finished["here"].result() is threading.current_thread()
    with pytest.raises(ZeroDivisionError):
        finished["broken"].result()
    (key, future), = scheduler.wait()
    assert key == "pool" and future.result() is not threading.current_thread()
    assert scheduler.running == 0 and scheduler.wait() == []


def test_wait_every_returns_all_that_finished():
    scheduler: Scheduler[int] = Scheduler(time.monotonic() + GATE_SECONDS)
    for i in range(4):
        scheduler.start(i, lambda i=i: i * i)
    assert sorted((k, f.result()) for k, f in scheduler.wait(every=True)) == [
        (0, 0), (1, 1), (2, 4), (3, 9)]


@pytest.mark.parametrize("every", [False, True])
def test_at_the_deadline_wait_returns_nothing_and_abandon_names_what_runs(every):
    gate = threading.Event()
    scheduler: Scheduler[str] = Scheduler(time.monotonic() + 0.05)
    try:
        scheduler.start("slow", gate.wait, GATE_SECONDS)
        scheduler.start("fast", lambda: "done")
        finished = []
        while True:
            got = scheduler.wait(every=every)
            if not got:
                break
            finished += got
        assert [k for k, _ in finished] == ["fast"]
        assert scheduler.remaining == 0.0
        assert scheduler.abandon() == ["slow"] and scheduler.running == 0
    finally:
        gate.set()


def test_take_back_hands_over_what_no_pool_thread_started():
    gate = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        scheduler: Scheduler[str] = Scheduler(None, pool.submit)
        scheduler.start("busy", gate.wait, GATE_SECONDS)  # holds the only thread
        scheduler.start("queued", str.upper, "x")
        back = scheduler.take_back()
        assert [(key, fn(*args)) for key, fn, args in back] == [("queued", "X")]
        assert scheduler.running == 1
    finally:
        gate.set()
        pool.shutdown(wait=True)
