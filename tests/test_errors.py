"""datapipe_django.errors: the one "is this store down?" classifier, on the clients' own
exception classes (no server: the real outages are in tests/test_outages*.py and the store,
cache and search fetcher tests)."""

from __future__ import annotations

import elastic_transport
import elasticsearch
import opensearchpy.exceptions as opensearch_errors
import pytest
import redis.exceptions
from django.db import DatabaseError, DataError, InterfaceError, OperationalError
from django_redis.exceptions import ConnectionInterrupted

from datapipe_django.cache.guard import is_cache_error
from datapipe_django.errors import (
    SourceUnavailable,
    caused_by_request,
    failure_reason,
    first_line,
    is_connection_failure,
    unavailable_reason,
)


def es_api_error(status: int, error: str = "") -> elasticsearch.ApiError:
    meta = elastic_transport.ApiResponseMeta(
        status=status, http_version="1.1", headers=elastic_transport.HttpHeaders(),
        duration=0.0, node=elastic_transport.NodeConfig("http", "127.0.0.1", 9200))
    return elasticsearch.ApiError(error or f"status {status}", meta=meta,
                                  body={"error": {"type": error}})


@pytest.mark.parametrize(("exc", "reason"), [
    (elastic_transport.ConnectionTimeout("read timed out"), "timed out: "),
    (elastic_transport.ConnectionError("refused"), "connection failed: "),
    (opensearch_errors.ConnectionTimeout("TIMEOUT", "slow", None), "timed out: "),
    (opensearch_errors.ConnectionError("N/A", "refused", None), "connection failed: "),
    (es_api_error(503), "engine answered 503: "),
    (es_api_error(429), "engine answered 429: "),
    (es_api_error(404, "index_not_found_exception"), "index missing ("),
    (opensearch_errors.TransportError(502, "bad gateway", {}), "engine answered 502: "),
    (redis.exceptions.ConnectionError("Connection refused"), "cache error: Connection refused"),
    (redis.exceptions.TimeoutError("Timeout reading"), "cache error: "),
    (redis.exceptions.ResponseError("LOADING Redis is loading"), "cache error: "),
    (ConnectionInterrupted(connection=None), "cache error: "),
    (ConnectionRefusedError(111, "Connection refused"), "ConnectionRefusedError: "),
    (TimeoutError("timed out"), "TimeoutError: timed out"),
    (OperationalError("canceling statement due to statement timeout"), "database error: "),
    (InterfaceError("connection already closed"), "connection failed: "),
])
def test_a_store_that_cannot_answer_has_a_reason(exc, reason):
    assert unavailable_reason(exc).startswith(reason)
    assert is_cache_error(exc)


@pytest.mark.parametrize("exc", [
    TypeError("bug"), ValueError("bug"), KeyError("bug"), DatabaseError("syntax error"),
    es_api_error(400, "parsing_exception"), es_api_error(404, "not_found"),
    opensearch_errors.TransportError(400, "search_phase_execution_exception", {}),
    redis.exceptions.DataError("Invalid input"),
])
def test_anything_else_is_not_an_outage(exc):
    assert unavailable_reason(exc) is None
    assert not is_cache_error(exc)


def test_a_statement_timeout_is_unavailability_but_no_connection_failure():
    timeout = OperationalError("canceling statement due to statement timeout")
    assert unavailable_reason(timeout) is not None and not is_connection_failure(timeout)
    assert is_connection_failure(InterfaceError("connection already closed"))
    assert not is_connection_failure(ConnectionRefusedError(111, "refused"))  # not a DB error


def test_first_line_is_one_short_line():
    assert first_line(ValueError("one\ntwo")) == "one"
    assert first_line(ValueError("")) == "ValueError"
    assert len(first_line(ValueError("x" * 500))) == 200


def test_failure_reason_prefers_the_sources_own_reason():
    assert failure_reason(SourceUnavailable("replica", "lagging 3.0 s")) == "lagging 3.0 s"
    assert failure_reason(OperationalError("refused\nmore")) == "OperationalError: refused"
    assert failure_reason(TimeoutError()) == "TimeoutError"


class _Driver(Exception):
    """A database driver's exception as Django wraps it (``__cause__``)."""

    def __init__(self, *args, sqlstate=None):
        super().__init__(*args)
        self.sqlstate = sqlstate


def _wrapped(cause, message="query failed"):
    exc = OperationalError(message)
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(("exc", "request_fault"), [
    (DataError("value too long for type character varying(5)"), True),
    (_wrapped(_Driver("stack depth limit exceeded", sqlstate="54001")), True),
    (_wrapped(_Driver("invalid regular expression", sqlstate="2201B")), True),
    (_wrapped(_Driver("terminating connection", sqlstate="57P01")), False),
    (_wrapped(_Driver(1267, "Illegal mix of collations")), True),
    (_wrapped(_Driver(2003, "Can't connect to MySQL server")), False),
    (OperationalError("LIKE or GLOB pattern too complex"), True),
    (OperationalError("database is locked"), False),
    (InterfaceError("connection already closed"), False),
    (ValueError("not a database error"), False),
])
def test_caused_by_request_tells_the_requests_fault_from_the_stores(exc, request_fault):
    assert caused_by_request(exc) is request_fault
