"""The pipeline's deadline as the database's own statement timeout.

``with statement_timeout(connection, seconds):`` makes every query in the block give up on
the server when the budget runs out, so a slow source fails (``OperationalError``) and the
chain falls back, instead of the request hanging past its deadline:

* PostgreSQL: in autocommit (the read path), ``SET LOCAL statement_timeout`` sent with the
  query as one statement string (one implicit transaction: nothing to reset); inside a
  transaction, ``SET statement_timeout`` before the query and ``RESET`` after, in one round
  trip (the connection is left as it was);
* MariaDB: ``SET STATEMENT max_statement_time=... FOR <query>`` (no extra round trip);
* MySQL and TiDB: the ``MAX_EXECUTION_TIME`` optimizer hint on ``SELECT`` (no extra round
  trip);
* SQLite: a progress handler that interrupts the query.

:func:`seconds_left` is what remains of a deadline: the one reading behind every
``remaining`` (of the state, a fetch request, an enricher's context, the pool scheduler).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["seconds_left", "statement_timeout"]


def seconds_left(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (a ``time.monotonic()`` instant; never negative), or
    None without one."""
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


@contextlib.contextmanager
def statement_timeout(connection: Any, seconds: float | None) -> Iterator[None]:
    """Bound the queries run on ``connection`` inside the block to ``seconds``."""
    if seconds is None:
        yield
        return
    ms = max(1, math.ceil(seconds * 1000))
    vendor = connection.vendor
    if vendor == "postgresql":
        with connection.execute_wrapper(_postgresql(ms)):
            yield
    elif vendor == "mysql":
        with connection.execute_wrapper(_mysql(ms, connection)):
            yield
    elif vendor == "sqlite":
        with _sqlite(connection, ms):
            yield
    else:
        yield


def _postgresql(ms: int) -> Callable[..., Any]:
    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool,
                context: dict[str, Any]) -> Any:
        # On the driver connection (not this cursor, whose results the caller still reads, and
        # not through Django, whose wrappers would call this one again).
        connection = context["connection"]
        raw = connection.connection
        if not many and not connection.in_atomic_block and _client_side(context["cursor"]):
            # Autocommit, parameters bound client-side (Django's default): the SET and the
            # query travel as one simple query, which the server runs as one implicit
            # transaction, so SET LOCAL holds for this query only and needs no RESET.
            result = execute(f"SET LOCAL statement_timeout = {ms:d}; {sql}", params, many,
                             context)
            context["cursor"].nextset()  # to the query's own result
            return result
        if _pipeline_supported(raw):
            # psycopg 3 pipeline mode: SET, the query and RESET travel in one round trip. An
            # error (the timeout itself) surfaces when the pipeline syncs, and rolls the SET
            # back with the statement that failed.
            with connection.wrap_database_errors, raw.pipeline():
                with raw.cursor() as side:
                    side.execute(f"SET statement_timeout = {ms:d}")
                result = execute(sql, params, many, context)
                with raw.cursor() as side:
                    side.execute("RESET statement_timeout")
            return result
        with connection.wrap_database_errors, raw.cursor() as side:  # Django's error classes
            side.execute(f"SET statement_timeout = {ms:d}")
        try:
            return execute(sql, params, many, context)
        finally:
            with contextlib.suppress(Exception), raw.cursor() as side:
                side.execute("RESET statement_timeout")  # fails only on a dead connection

    return wrapper


def _client_side(cursor: Any) -> bool:
    """Whether ``cursor`` (Django's wrapper) binds parameters client-side (psycopg 3's
    ``ClientCursor``, Django's default), so that one execute may carry two statements."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg2 deployments
        return False
    return isinstance(getattr(cursor, "cursor", None), psycopg.ClientCursor)


def _pipeline_supported(raw: Any) -> bool:
    """psycopg 3 with a libpq that has pipeline mode (psycopg2 has none)."""
    pipeline_class = getattr(type(raw), "pipeline", None)
    if pipeline_class is None:
        return False
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg2 deployments
        return False
    return bool(psycopg.Pipeline.is_supported())


def _mysql(ms: int, connection: Any) -> Callable[..., Any]:
    mariadb = bool(getattr(connection, "mysql_is_mariadb", False))

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool,
                context: dict[str, Any]) -> Any:
        if not sql.lstrip().upper().startswith("SELECT"):
            return execute(sql, params, many, context)
        if mariadb:
            sql = f"SET STATEMENT max_statement_time={ms / 1000:.3f} FOR {sql}"
        else:
            sql = f"SELECT /*+ MAX_EXECUTION_TIME({ms:d}) */ {sql.lstrip()[6:]}"
        return execute(sql, params, many, context)

    return wrapper


@contextlib.contextmanager
def _sqlite(connection: Any, ms: int) -> Iterator[None]:
    deadline = time.monotonic() + ms / 1000

    def handler() -> int:
        return 1 if time.monotonic() > deadline else 0  # non-zero interrupts the query

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool,
                context: dict[str, Any]) -> Any:
        # Around the query only: with DEBUG, Django's SQL logging quotes the parameters with
        # queries of its own after it, which an interrupt would fail outside Django's errors.
        raw = context["connection"].connection
        raw.set_progress_handler(handler, 10_000)
        try:
            return execute(sql, params, many, context)
        finally:
            raw.set_progress_handler(None, 0)

    with connection.execute_wrapper(wrapper):
        yield
