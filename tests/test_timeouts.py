"""The deadline reaches each database as its own statement timeout."""

from __future__ import annotations

import time

import pytest
from django.db import OperationalError, connections

from datapipe_django.timeouts import seconds_left, statement_timeout
from tests.conftest import engine_databases

pytestmark = pytest.mark.django_db(databases=engine_databases())

SLOW = {
    "postgresql": "SELECT pg_sleep(2)",
    "mysql": "SELECT SLEEP(2)",
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000000)"
              " SELECT count(*) FROM c",
}


def test_a_slow_query_is_cut_at_the_budget_and_the_connection_stays_usable(engine_alias):
    connection = connections[engine_alias]
    started = time.monotonic()
    with statement_timeout(connection, 0.2), connection.cursor() as cursor, \
            pytest.raises(OperationalError):
        cursor.execute(SLOW[connection.vendor])
    assert time.monotonic() - started < 1.5
    if connection.vendor == "postgresql":
        # The transaction of the test was aborted by the cancel; roll back to its savepoint
        # is the test's business. What matters: the session setting was reset.
        connection.needs_rollback = True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone()[0] == 1


def test_fast_queries_pass_and_no_budget_means_no_timeout(engine_alias):
    connection = connections[engine_alias]
    with statement_timeout(connection, 5.0), connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone()[0] == 1
    with statement_timeout(connection, None), connection.cursor() as cursor:
        cursor.execute("SELECT 2")
        assert cursor.fetchone()[0] == 2


@pytest.mark.django_db(databases=[a for a in engine_databases() if a != "archive"],
                       transaction=True)
def test_postgresql_session_keeps_its_own_statement_timeout():
    from tests.conftest import require_alias

    require_alias("primary")
    connection = connections["primary"]

    def current() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            return cursor.fetchone()[0]

    before = current()
    with statement_timeout(connection, 0.2), connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone()[0] == 1  # results survive the reset sent after the query
    assert current() == before
    with statement_timeout(connection, 0.2), connection.cursor() as cursor, \
            pytest.raises(OperationalError):
        cursor.execute("SELECT pg_sleep(2)")
    assert current() == before


def test_the_sqlite_interrupt_stays_inside_the_query_with_debug_sql_logging(settings):
    """With DEBUG, Django's cursor wrapper quotes the parameters of the query it just ran with
    queries of its own; an interrupt there escaped as a bare ``sqlite3.OperationalError`` (a
    500), not Django's, after the deadline. It is interrupted in the query only."""
    settings.DEBUG = True
    connection = connections["default"]
    started = time.monotonic()
    params = list(range(-5_000, 0))  # enough for the quoting queries to run a while
    slow = SLOW["sqlite"].replace("x < 50000000", "x < 50000000 AND x NOT IN ({})".format(
        ", ".join(["%s"] * len(params))))
    with statement_timeout(connection, 0.2), connection.cursor() as cursor, \
            pytest.raises(OperationalError):
        cursor.execute(slow, params)
    assert time.monotonic() - started < 1.5
    assert "-5000, -4999" in connection.queries[-1]["sql"]


def test_seconds_left_counts_down_to_zero_and_never_below():
    assert seconds_left(None) is None
    start = time.monotonic()
    left = seconds_left(start + 5.0)
    assert left is not None and 0.0 < left <= 5.0
    assert seconds_left(start - 1.0) == 0.0  # past the deadline: nothing left, not negative
    later = seconds_left(start + 5.0)
    assert later is not None and later <= left
