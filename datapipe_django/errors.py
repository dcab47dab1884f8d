"""The exception tree of datapipe_django.

::

    Exception
    ├── PipelineError(stage, op, cause)        an execution failed; the view maps it to HTTP
    │   ├── ValidationFailed                   400  bad parameters; ``errors`` maps param → messages
    │   ├── NoFetcher                          400  no source can serve this request
    │   ├── SourcesUnavailable                 503  every candidate source was unavailable
    │   ├── DeadlineExceeded                   504  the pipeline's ``timeout`` ran out
    │   └── EnrichmentFailed                   502  a required enricher failed
    └── SourceUnavailable(source, reason)      raised *by a fetcher* when its own store is down,
                                               lagging or timing out; the chain moves on

Only :class:`SourceUnavailable` and Django's ``OperationalError``/``InterfaceError`` move a
fetcher chain to its next source. Anything else (``FieldError``, ``TypeError``...) is a bug and
propagates unchanged. HTTP status codes live here only as data (``status_code``); the mapping
to responses happens in :mod:`datapipe_django.rest`.

Is this the request's fault?
    :func:`caused_by_request` tells a database error that the request's own values caused (a
    value the column cannot take, a statement past the database's limits: a 400) from the
    store's.

Is this store down?
    :func:`unavailable_reason` is the one classifier of a store's exceptions, whichever store
    raised it (a database, a cache, a search engine): why it means the store cannot answer now,
    or None when it is anything else (a bug, a bad query), which must propagate. The breakers
    of the cache aliases, the database aliases and the search engines all decide with it;
    :func:`is_connection_failure` narrows a database error to "the store cannot be reached" (a
    query cut by its statement timeout is unavailability, but no reason to skip the store).
    The client libraries' exception classes are recognised when those libraries are loaded;
    this module imports none of them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.db import DataError, InterfaceError, OperationalError

__all__ = [
    "DeadlineExceeded",
    "EnrichmentFailed",
    "NoFetcher",
    "PipelineError",
    "SourceUnavailable",
    "SourcesUnavailable",
    "ValidationFailed",
    "caused_by_request",
    "failure_reason",
    "first_line",
    "is_connection_failure",
    "unavailable_reason",
]


class PipelineError(Exception):
    """Base of every error a pipeline execution raises.

    ``stage`` is the stage that failed (``"validate"``, ``"fetch"``...), ``op`` the operation
    inside it (a fetcher or enricher name, a parameter), ``cause`` the underlying exception.
    """

    status_code = 500
    default_code = "pipeline_error"
    default_message = "The pipeline failed."

    def __init__(
        self,
        message: str | None = None,
        *,
        stage: str | None = None,
        op: str | None = None,
        cause: BaseException | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.stage = stage
        self.op = op
        self.cause = cause
        super().__init__(self.message)

    @property
    def code(self) -> str:
        return self.default_code

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, stage={self.stage!r}, op={self.op!r}, "
            f"cause={self.cause!r})"
        )


class ValidationFailed(PipelineError):
    """Bad input. ``errors`` maps each offending parameter to a list of messages."""

    status_code = 400
    default_code = "invalid"
    default_message = "Invalid request parameters."

    def __init__(
        self,
        errors: Mapping[str, Sequence[str] | str] | str | None = None,
        *,
        stage: str | None = "validate",
        op: str | None = None,
        cause: BaseException | None = None,
    ) -> None:
        if isinstance(errors, str):
            errors = {op or "non_field_errors": [errors]}
        self.errors: dict[str, list[str]] = {
            key: [value] if isinstance(value, str) else [str(v) for v in value]
            for key, value in (errors or {}).items()
        }
        names = ", ".join(self.errors) or "request"
        super().__init__(f"Invalid parameter(s): {names}.", stage=stage, op=op, cause=cause)


class NoFetcher(PipelineError):
    """No fetcher of the pipeline can handle the request (every ``can_handle`` declined)."""

    status_code = 400
    default_code = "no_fetcher"
    default_message = "No source can serve this request."

    def __init__(self, message: str | None = None, *, reasons: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        self.reasons = dict(reasons or {})
        kwargs.setdefault("stage", "fetch")
        super().__init__(message, **kwargs)


class SourcesUnavailable(PipelineError):
    """Every candidate source failed with its own unavailability. ``reasons``: name → why."""

    status_code = 503
    default_code = "sources_unavailable"
    default_message = "No data source is available right now."

    def __init__(self, message: str | None = None, *, reasons: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        self.reasons = dict(reasons or {})
        kwargs.setdefault("stage", "fetch")
        super().__init__(message, **kwargs)


class DeadlineExceeded(PipelineError):
    """The pipeline's ``timeout`` budget ran out before a required step finished."""

    status_code = 504
    default_code = "deadline_exceeded"
    default_message = "The request took longer than its deadline."


class EnrichmentFailed(PipelineError):
    """A required enricher failed."""

    status_code = 502
    default_code = "enrichment_failed"
    default_message = "A required enrichment failed."


class SourceUnavailable(Exception):
    """Raised by a fetcher when its own store cannot answer (down, lagging, timing out).

    This is the one signal, besides Django's ``OperationalError``/``InterfaceError``, that makes
    a fetcher chain fall back to its next source.
    """

    def __init__(self, source: str, reason: str, *, cause: BaseException | None = None) -> None:
        self.source = source
        self.reason = reason
        self.cause = cause
        super().__init__(f"{source}: {reason}")


# -- is this the request's fault? --------------------------------------------------------------

#: SQLite's messages for a statement too large or complex for it.
_SQLITE_LIMITS = ("pattern too complex", "expression tree is too large", "too many sql variables",
                  "parser stack overflow", "string or blob too big", "too many terms",
                  "too many columns")
#: MySQL/MariaDB error codes a statement's own values cause: illegal mix of collations (a
#: character the column's charset lacks), a bad regular expression, a thread stack overrun.
_MYSQL_CODES = frozenset({1267, 1270, 1271, 1139, 1436, 3685, 3692, 3699})


def caused_by_request(exc: BaseException) -> bool:
    """Whether a database error is the request's fault rather than the store's: a value the
    column cannot take (Django's ``DataError``), a statement past the database's limits
    (PostgreSQL's class 54 "program limit exceeded", SQLite's "pattern too complex", MySQL's
    collation and regular-expression errors)."""
    if isinstance(exc, DataError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if isinstance(sqlstate, str):
        return sqlstate.startswith("54") or sqlstate == "2201B"
    args = getattr(cause, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in _MYSQL_CODES
    text = str(exc).lower()
    return any(limit in text for limit in _SQLITE_LIMITS)


# -- is this store down? -----------------------------------------------------------------------

def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (at most 200 characters), or its class name."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 200 else f"{line[:197]}..."


def failure_reason(exc: BaseException) -> str:
    """Why a source could not answer, as attempts, spans, breakers and logs say it: the
    source's own reason, else the error's class and the first line of its message."""
    if isinstance(exc, SourceUnavailable):
        return exc.reason
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else \
        type(exc).__name__


def unavailable_reason(exc: BaseException) -> str | None:
    """Why ``exc`` means that the store which raised it cannot answer now, or None.

    A store cannot answer when it cannot be reached or is overloaded: a socket error or timeout
    (``OSError``), a database's ``OperationalError``/``InterfaceError``, the cache clients'
    connection errors (django-redis ``ConnectionInterrupted``; redis-py ``ConnectionError``,
    ``TimeoutError`` and ``ResponseError``, a server loading, read-only or out of memory;
    pymemcache and pylibmc errors), the search clients' connection errors and timeouts, and an
    engine's 5xx or 429 answer or a missing index. Anything else is None.
    """
    for rule in _RULES:
        reason = rule(exc)
        if reason is not None:
            return reason
    return None


# PostgreSQL SQLSTATEs of a server going away: class 08 (connection exception) and
# admin_shutdown, crash_shutdown, cannot_connect_now.
_PG_DOWN_STATES = ("57P01", "57P02", "57P03")
# MySQL/MariaDB client and server error numbers of a server that cannot be reached or went away.
_MYSQL_DOWN_ERRORS = frozenset({1040, 1053, 2002, 2003, 2005, 2006, 2013, 2026, 2055})


def is_connection_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (a Django database error) means the store cannot be reached, as opposed
    to a query that failed or was cut by its timeout."""
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if type(cause).__name__ == "PoolTimeout":
        return True
    sqlstate = getattr(cause, "sqlstate", None)
    module = type(cause).__module__
    if module.startswith("psycopg"):
        # No SQLSTATE: the client could not connect, or lost the connection.
        return sqlstate is None or sqlstate.startswith("08") or sqlstate in _PG_DOWN_STATES
    args = getattr(cause, "args", ())
    if module.startswith("MySQLdb") and args and isinstance(args[0], int):
        return args[0] in _MYSQL_DOWN_ERRORS
    return isinstance(exc, InterfaceError)


def _database(exc: BaseException) -> str | None:
    if not isinstance(exc, OperationalError | InterfaceError):
        return None
    what = "connection failed" if is_connection_failure(exc) else "database error"
    return f"{what}: {first_line(exc)}"


def _loaded(module: str, *names: str) -> tuple[type[BaseException], ...]:
    """The exception classes ``names`` of ``module`` when it is loaded (none otherwise: nothing
    can have raised them)."""
    loaded = sys.modules.get(module)
    if loaded is None:
        return ()
    found = (getattr(loaded, name, None) for name in names)
    return tuple(cls for cls in found if isinstance(cls, type) and issubclass(cls, BaseException))


#: (module, class names, what the reason says) of errors that mean "down" by their class alone.
_DOWN_CLASSES = (
    ("elastic_transport", ("ConnectionTimeout",), "timed out"),
    ("opensearchpy.exceptions", ("ConnectionTimeout",), "timed out"),
    ("elastic_transport", ("ConnectionError",), "connection failed"),
    ("opensearchpy.exceptions", ("ConnectionError",), "connection failed"),
    ("django_redis.exceptions", ("ConnectionInterrupted",), "cache error"),
    ("redis.exceptions", ("ConnectionError", "TimeoutError", "ResponseError"), "cache error"),
    ("pymemcache.exceptions", ("MemcacheError",), "cache error"),
    ("pylibmc", ("Error",), "cache error"),
)


def _client(exc: BaseException) -> str | None:
    for module, names, what in _DOWN_CLASSES:
        classes = _loaded(module, *names)
        if classes and isinstance(exc, classes):
            return f"{what}: {first_line(exc)}"
    return None


def _socket(exc: BaseException) -> str | None:
    return f"{type(exc).__name__}: {first_line(exc)}" if isinstance(exc, OSError) else None


def _engine_status(exc: BaseException) -> str | None:
    """An engine's answer that means it cannot serve now: 5xx, 429, the index missing."""
    es_errors = _loaded("elastic_transport", "ApiError")
    if es_errors and isinstance(exc, es_errors):
        status: Any = exc.meta.status  # type: ignore[attr-defined]
    else:
        os_errors = _loaded("opensearchpy.exceptions", "TransportError")
        if not (os_errors and isinstance(exc, os_errors)):
            return None
        status = exc.status_code  # type: ignore[attr-defined]
    if not isinstance(status, int):
        return None
    if status == 404 and "index_not_found" in str(getattr(exc, "error", "")):
        return f"index missing ({first_line(exc)})"
    if status >= 500 or status == 429:
        return f"engine answered {status}: {first_line(exc)}"
    return None


_RULES: tuple[Callable[[BaseException], str | None], ...] = (
    _database, _client, _engine_status, _socket)
