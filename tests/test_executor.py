"""``datapipe_django.executor``: the one bounded pool, sized by ``MAX_WORKERS``, running each
task in a copy of the caller's context and returning its thread's connections."""

from __future__ import annotations

import contextvars
import threading
from typing import Any

import pytest
from django.db import connections
from django.test import override_settings

from datapipe_django.conf import datapipe_settings
from datapipe_django.executor import get_executor, submit
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
